import { useEffect, useRef, useState } from "preact/hooks";
import type { Alert, Me, Summary } from "../api/types";
import { PageTitle } from "../components/PageTitle";
import { ProblemNotice } from "../components/ProblemNotice";
import { RecentAlerts } from "../components/RecentAlerts";
import { count, when } from "../format";
import { follow, type Live } from "../live";
import { alerts } from "../services/alerts";
import { deliverySuccessRate, stats, streamUrl, summaryChannels } from "../services/stats";

function successRate(deliveries: Record<string, number>): string {
  const rate = deliverySuccessRate(deliveries);
  return rate === null ? "No deliveries yet" : `${rate} %`;
}

function Card({ title, value, children }: { title: string; value: string; children?: preact.ComponentChildren }) {
  return (
    <article class="card" aria-label={title}>
      <h2>{title}</h2>
      <p class="card-value">{value}</p>
      {children}
    </article>
  );
}

function Breakdown({ counts, label }: { counts: Record<string, number>; label: string }) {
  const entries = Object.entries(counts).filter(([name]) => name !== "total");
  if (!entries.length) return <p class="hint">None</p>;
  return (
    <dl class="breakdown" aria-label={label}>
      {entries.map(([name, value]) => (
        <div key={name}>
          <dt>{name}</dt>
          <dd>{count(value)}</dd>
        </div>
      ))}
    </dl>
  );
}

export default function Overview({ me }: { me: Me }) {
  const [summary, setSummary] = useState<Summary | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [liveState, setLiveState] = useState<"connecting" | "live" | "offline">("connecting");
  const [recent, setRecent] = useState<Alert[] | null>(null);
  const [alertsError, setAlertsError] = useState<unknown>(null);
  const live = useRef<Live | null>(null);
  const has = (scope: string) => me.scopes.includes("admin") || me.scopes.includes(scope);
  const readable = has("stats:read");
  const alertsReadable = has("alerts:read") || has("alerts:write");

  useEffect(() => {
    if (!readable) return;
    const channels = summaryChannels(me.scopes);
    const view = (live.current = follow({
      url: channels.length ? streamUrl(channels) : null,
      refresh: async (signal) => {
        const reads: Promise<unknown>[] = [
          stats.summary(signal).then(
            (read) => {
              setSummary(read);
              setError(null);
            },
            (caught: unknown) => {
              if (!signal.aborted) setError(caught);
            },
          ),
        ];
        if (alertsReadable) {
          reads.push(
            alerts.recent(signal).then(
              (page) => {
                setRecent(page.items);
                setAlertsError(null);
              },
              (caught: unknown) => {
                if (!signal.aborted) setAlertsError(caught);
              },
            ),
          );
        }
        await Promise.all(reads);
      },
      onState: setLiveState,
    }));
    return () => view.stop();
  }, [readable, me.scopes.join(",")]);

  if (!readable) {
    return (
      <section>
        <PageTitle>Overview</PageTitle>
        <p class="empty">Your credentials do not include the stats:read scope.</p>
      </section>
    );
  }
  return (
    <section>
      <div class="page-head">
        <PageTitle>Overview</PageTitle>
        <p class={`live live-${liveState}`} role="status">
          {liveState === "live"
            ? "Live"
            : liveState === "offline"
              ? "Offline: reconnecting"
              : "Connecting…"}
        </p>
      </div>
      {error !== null && <ProblemNotice error={error} />}
      {!summary && !error && (
        <p class="loading" role="status">
          Loading the summary…
        </p>
      )}
      {summary && (
        <>
          <div class="cards">
            <Card title="Events, last hour" value={count(summary.events_last_hour)} />
            <Card title="Deliveries" value={count(summary.deliveries.total)}>
              <p>Success rate: {successRate(summary.deliveries)}</p>
              <Breakdown counts={summary.deliveries} label="Deliveries by status" />
            </Card>
            <Card title="Plugin runs, last hour" value={count(summary.executions_last_hour.total)}>
              <Breakdown counts={summary.executions_last_hour} label="Plugin runs by status" />
            </Card>
            <Card title="Open alerts" value={count(summary.open_alerts.total)}>
              <Breakdown counts={summary.open_alerts} label="Open alerts by severity" />
            </Card>
            <Card
              title="Plugins"
              value={`${count(summary.plugins.enabled)} of ${count(summary.plugins.installed)} enabled`}
            >
              <p>
                Instances: {count(summary.instances.enabled)} of {count(summary.instances.total)}{" "}
                enabled
              </p>
            </Card>
            <Card title="Metric series" value={count(summary.metrics.series)}>
              <p>{count(summary.metrics.points)} points stored</p>
            </Card>
          </div>
          <p class="hint">Figures as of {when(summary.generated_at)}.</p>
        </>
      )}
      {alertsReadable && (
        <RecentAlerts
          items={recent}
          error={alertsError}
          canWrite={has("alerts:write")}
          onChanged={() => live.current?.refresh()}
        />
      )}
    </section>
  );
}
