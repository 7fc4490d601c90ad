import { useState } from "preact/hooks";
import type { Alert } from "../api/types";
import { count, when } from "../format";
import { alerts as service } from "../services/alerts";
import { ProblemNotice } from "./ProblemNotice";

interface Props {
  items: Alert[] | null;
  error: unknown;
  canWrite: boolean;
  onChanged: () => void;
}

/** The newest alerts, newest first, with acknowledge and resolve. */
export function RecentAlerts({ items, error, canWrite, onChanged }: Props) {
  const [busy, setBusy] = useState<string | null>(null);
  const [actionError, setActionError] = useState<unknown>(null);
  const [status, setStatus] = useState("");

  const act = async (alert: Alert, action: "acknowledge" | "resolve") => {
    setBusy(alert.id);
    setActionError(null);
    try {
      await service[action](alert.id);
      setStatus(`Alert ${alert.type} ${action === "acknowledge" ? "acknowledged" : "resolved"}.`);
      onChanged();
    } catch (caught) {
      setActionError(caught);
    } finally {
      setBusy(null);
    }
  };

  return (
    <section class="recent-alerts" aria-labelledby="recent-alerts-title">
      <h2 id="recent-alerts-title">Recent alerts</h2>
      <p role="status" class="status-line">
        {status}
      </p>
      <ProblemNotice error={actionError} />
      {error ? (
        <ProblemNotice error={error} />
      ) : items === null ? (
        <p class="loading" role="status">
          Loading alerts…
        </p>
      ) : items.length === 0 ? (
        <p class="empty">No alerts. They appear here as they open.</p>
      ) : (
        <ol class="timeline">
          {items.map((alert) => (
            <li key={alert.id} class="alert-item" aria-label={`${alert.severity} alert ${alert.type}`}>
              <div class="alert-head">
                <span class={`badge badge-${alert.severity}`}>{alert.severity}</span>
                <strong class="alert-type">{alert.type}</strong>
                <span class={`badge badge-state-${alert.state}`}>{alert.state}</span>
              </div>
              {alert.message && <p class="alert-message">{alert.message}</p>}
              <p class="hint">
                Last seen {when(alert.last_seen_at)}
                {alert.count > 1 ? `, ${count(alert.count)} times` : ""}; from {alert.source}
              </p>
              {canWrite && alert.state !== "resolved" && (
                <div class="actions">
                  {alert.state === "open" && (
                    <button
                      type="button"
                      class="secondary"
                      disabled={busy === alert.id}
                      aria-label={`Acknowledge ${alert.type}`}
                      onClick={() => act(alert, "acknowledge")}
                    >
                      Acknowledge
                    </button>
                  )}
                  <button
                    type="button"
                    class="secondary"
                    disabled={busy === alert.id}
                    aria-label={`Resolve ${alert.type}`}
                    onClick={() => act(alert, "resolve")}
                  >
                    Resolve
                  </button>
                </div>
              )}
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
