import type { ComponentType } from "preact";
import { useCallback, useEffect, useState } from "preact/hooks";
import { ApiError } from "../api/client";
import type { Delivery, DeliveryDetail, Endpoint, EndpointStats, HourAttempts, Me } from "../api/types";
import { Dialog } from "../components/Dialog";
import { Field } from "../components/Field";
import { PageTitle } from "../components/PageTitle";
import { ProblemNotice } from "../components/ProblemNotice";
import { when } from "../format";
import { holds } from "../grants";
import { pathId, useLocation } from "../router";
import { type DeliveryFilter, webhooks } from "../services/webhooks";
import { localToIso, milliseconds, percent } from "../webhookStats";
import { Pager } from "../components/Pager";

type Chart = ComponentType<{ hours: HourAttempts[] }>;

/** The chart, loaded with uPlot when the statistics are first shown. */
function LazyChart({ hours }: { hours: HourAttempts[] }) {
  const [chart, setChart] = useState<{ Chart: Chart } | null>(null);
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    let current = true;
    import("../components/AttemptsChart")
      .then((module) => current && setChart({ Chart: module.default }))
      .catch(() => current && setFailed(true));
    return () => {
      current = false;
    };
  }, []);
  if (failed) return <p class="hint">The chart could not be loaded: the table below has the same figures.</p>;
  if (!chart) {
    return (
      <p class="loading" role="status">
        Loading the chart…
      </p>
    );
  }
  return <chart.Chart hours={hours} />;
}

const STATUSES = ["pending", "delivering", "retrying", "succeeded", "failed"];
const WINDOWS: ReadonlyArray<readonly [string, string]> = [
  ["1h", "Last hour"],
  ["24h", "Last 24 hours"],
  ["7d", "Last 7 days"],
];

type Loaded<T> = { state: "loading" } | { state: "error"; error: unknown } | { state: "ready"; value: T };

export default function WebhookDetail({ me }: { me: Me }) {
  const url = useLocation();
  const id = pathId(url.pathname);
  const [endpoint, setEndpoint] = useState<Loaded<Endpoint>>({ state: "loading" });
  const [stats, setStats] = useState<Loaded<EndpointStats>>({ state: "loading" });
  const [reloads, setReloads] = useState(0);
  const reload = useCallback(() => setReloads((n) => n + 1), []);
  const canRetry = holds(me.scopes, "deliveries:write");

  useEffect(() => {
    const abort = new AbortController();
    const fail = (set: (value: Loaded<never>) => void) => (error: unknown) => {
      if (!abort.signal.aborted) set({ state: "error", error });
    };
    webhooks
      .get(id, abort.signal)
      .then((value) => setEndpoint({ state: "ready", value }))
      .catch(fail(setEndpoint));
    webhooks
      .stats(id, abort.signal)
      .then((value) => setStats({ state: "ready", value }))
      .catch(fail(setStats));
    return () => abort.abort();
  }, [id, reloads]);

  const title = endpoint.state === "ready" ? `Webhook ${endpoint.value.url}` : "Webhook";
  return (
    <section>
      <p class="crumbs">
        <a href="/settings/webhooks">All webhooks</a>
      </p>
      <PageTitle>{title}</PageTitle>
      {endpoint.state === "loading" && (
        <p class="loading" role="status">
          Loading the endpoint…
        </p>
      )}
      {endpoint.state === "error" && <ProblemNotice error={endpoint.error} />}
      {endpoint.state === "ready" && (
        <dl class="facts">
          <div>
            <dt>Status</dt>
            <dd>{endpoint.value.enabled ? "Enabled" : `Disabled${endpoint.value.disabled_reason ? `: ${endpoint.value.disabled_reason}` : ""}`}</dd>
          </div>
          <div>
            <dt>Event types</dt>
            <dd>{endpoint.value.event_types.length ? endpoint.value.event_types.join(", ") : "Every type"}</dd>
          </div>
          {endpoint.value.description && (
            <div>
              <dt>Description</dt>
              <dd>{endpoint.value.description}</dd>
            </div>
          )}
        </dl>
      )}
      <h2>Statistics</h2>
      <StatsView stats={stats} onRetry={reload} />
      <Deliveries id={id} canRetry={canRetry} onChanged={reload} />
      {canRetry && <Recover id={id} onDone={reload} />}
    </section>
  );
}

function StatsView({ stats, onRetry }: { stats: Loaded<EndpointStats>; onRetry: () => void }) {
  if (stats.state === "loading") {
    return (
      <p class="loading" role="status">
        Loading statistics…
      </p>
    );
  }
  if (stats.state === "error") {
    return (
      <div>
        <ProblemNotice error={stats.error} />
        <button type="button" class="secondary" onClick={onRetry}>
          Try again
        </button>
      </div>
    );
  }
  const value = stats.value;
  return (
    <>
      <div class="table-wrap" role="region" aria-label="Statistics table" tabIndex={0}>
        <table class="stats">
          <caption class="visually-hidden">Attempts, success rate and latency by window</caption>
          <thead>
            <tr>
              <th scope="col">Window</th>
              <th scope="col">Attempts</th>
              <th scope="col">Succeeded</th>
              <th scope="col">Failed</th>
              <th scope="col">Success rate</th>
              <th scope="col">p50 latency</th>
              <th scope="col">p95 latency</th>
            </tr>
          </thead>
          <tbody>
            {WINDOWS.map(([key, label]) => {
              const w = value.windows[key];
              return (
                <tr key={key}>
                  <th scope="row">{label}</th>
                  <td>{w?.attempts ?? 0}</td>
                  <td>{w?.succeeded ?? 0}</td>
                  <td>{w?.failed ?? 0}</td>
                  <td>{percent(w?.success_rate ?? null)}</td>
                  <td>{milliseconds(w?.p50_ms ?? null)}</td>
                  <td>{milliseconds(w?.p95_ms ?? null)}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
      <p class="hint">{value.pending} deliveries waiting.</p>
      {value.hourly && value.hourly.length > 0 && (
        <>
          <h3>Attempts over the last 24 hours</h3>
          <LazyChart hours={value.hourly} />
          <details>
            <summary>Attempts by hour, as a table</summary>
            <div class="table-wrap" role="region" aria-label="Attempts by hour table" tabIndex={0}>
              <table>
                <caption class="visually-hidden">Attempts by hour, last 24 hours</caption>
                <thead>
                  <tr>
                    <th scope="col">Hour from</th>
                    <th scope="col">Succeeded</th>
                    <th scope="col">Failed</th>
                  </tr>
                </thead>
                <tbody>
                  {value.hourly.map((hour) => (
                    <tr key={hour.start}>
                      <th scope="row">{when(hour.start)}</th>
                      <td>{hour.succeeded}</td>
                      <td>{hour.failed}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          </details>
        </>
      )}
    </>
  );
}

type DeliveryLoad =
  | { state: "loading" }
  | { state: "error"; error: unknown }
  | { state: "ready"; items: Delivery[]; next: string | null };

function Deliveries({ id, canRetry, onChanged }: { id: string; canRetry: boolean; onChanged: () => void }) {
  const [filter, setFilter] = useState<DeliveryFilter>({});
  const [filterError, setFilterError] = useState<Record<string, string>>({});
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const cursor = cursors[cursors.length - 1] ?? null;
  const [load, setLoad] = useState<DeliveryLoad>({ state: "loading" });
  const [reloads, setReloads] = useState(0);
  const [status, setStatus] = useState("");
  const [actionError, setActionError] = useState<unknown>(null);
  const [shown, setShown] = useState<string | null>(null);

  useEffect(() => {
    const abort = new AbortController();
    setLoad({ state: "loading" });
    setFilterError({});
    webhooks
      .deliveries(id, filter, cursor, abort.signal)
      .then((page) => setLoad({ state: "ready", items: page.items, next: page.next_cursor }))
      .catch((error: unknown) => {
        if (abort.signal.aborted) return;
        setLoad({ state: "error", error });
        if (error instanceof ApiError) setFilterError(error.fieldErrors());
      });
    return () => abort.abort();
  }, [id, filter, cursor, reloads]);

  const apply = (event: SubmitEvent) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget as HTMLFormElement);
    const since = String(form.get("since") ?? "");
    setFilter({
      status: String(form.get("status") ?? ""),
      event_type: String(form.get("event_type") ?? "").trim(),
      since: since ? localToIso(since) ?? since : null,
    });
    setCursors([null]);
  };

  const retry = async (delivery: Delivery) => {
    setActionError(null);
    try {
      const updated = await webhooks.retry(delivery.id);
      setStatus(`Delivery of ${delivery.event_type} queued again (${updated.status}).`);
      setReloads((n) => n + 1);
      onChanged();
    } catch (caught) {
      setActionError(caught);
    }
  };

  return (
    <>
      <h2>Deliveries</h2>
      <form class="filters" onSubmit={apply} aria-label="Filter deliveries">
        <Field id="filter-status" label="Status" error={filterError.status}>
          {(aria) => (
            <select {...aria} name="status">
              <option value="">Any</option>
              {STATUSES.map((s) => (
                <option key={s} value={s}>
                  {s}
                </option>
              ))}
            </select>
          )}
        </Field>
        <Field id="filter-type" label="Event type" hint="Exact, or a prefix like invoice.*" error={filterError.event_type}>
          {(aria) => <input {...aria} name="event_type" autoComplete="off" />}
        </Field>
        <Field id="filter-since" label="Since" error={filterError.since}>
          {(aria) => <input {...aria} name="since" type="datetime-local" />}
        </Field>
        <div class="filter-actions">
          <button type="submit" class="secondary">
            Apply filters
          </button>
          <button type="button" class="secondary" onClick={() => setReloads((n) => n + 1)}>
            Refresh
          </button>
        </div>
      </form>
      <p role="status" class="status-line">
        {status}
      </p>
      <ProblemNotice error={actionError} />
      {load.state === "loading" && (
        <p class="loading" role="status">
          Loading deliveries…
        </p>
      )}
      {load.state === "error" && (
        <div>
          <ProblemNotice error={load.error} />
          <button type="button" class="secondary" onClick={() => setReloads((n) => n + 1)}>
            Try again
          </button>
        </div>
      )}
      {load.state === "ready" && load.items.length === 0 && <p class="empty">No deliveries match.</p>}
      {load.state === "ready" && load.items.length > 0 && (
        <div class="table-wrap" role="region" aria-label="Deliveries table" tabIndex={0}>
          <table>
            <caption class="visually-hidden">Deliveries to this endpoint, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Event type</th>
                <th scope="col">Status</th>
                <th scope="col">Time</th>
                <th scope="col">Response</th>
                <th scope="col">Attempts</th>
                <th scope="col">Error</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {load.items.map((d) => (
                <tr key={d.id} data-delivery-id={d.id}>
                  <th scope="row" class="mono">
                    {d.event_type}
                  </th>
                  <td>
                    <span class={`badge badge-${d.status}`}>{d.status}</span>
                  </td>
                  <td>{when(d.finished_at ?? d.updated_at)}</td>
                  <td>{d.last_status_code ?? "—"}</td>
                  <td>{d.attempts}</td>
                  <td class="error-cell">{d.last_error ?? ""}</td>
                  <td class="actions">
                    <button
                      type="button"
                      class="secondary"
                      aria-label={`Attempts of delivery ${d.id}`}
                      onClick={() => setShown(d.id)}
                    >
                      Attempts
                    </button>
                    {canRetry && (d.status === "failed" || d.status === "succeeded") && (
                      <button type="button" aria-label={`Retry delivery ${d.id}`} onClick={() => retry(d)}>
                        Retry
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {load.state === "ready" && (
        <Pager label="Pages of deliveries" cursors={cursors} setCursors={setCursors} next={load.next} />
      )}
      {shown && <AttemptLog id={shown} onClose={() => setShown(null)} />}
    </>
  );
}

function AttemptLog({ id, onClose }: { id: string; onClose: () => void }) {
  const [detail, setDetail] = useState<Loaded<DeliveryDetail>>({ state: "loading" });
  useEffect(() => {
    const abort = new AbortController();
    webhooks
      .delivery(id, abort.signal)
      .then((value) => setDetail({ state: "ready", value }))
      .catch((error: unknown) => !abort.signal.aborted && setDetail({ state: "error", error }));
    return () => abort.abort();
  }, [id]);
  return (
    <Dialog id="attempt-log" title="Attempts of this delivery" onClose={onClose}>
      {detail.state === "loading" && (
        <p class="loading" role="status">
          Loading attempts…
        </p>
      )}
      {detail.state === "error" && <ProblemNotice error={detail.error} />}
      {detail.state === "ready" && detail.value.attempt_log.length === 0 && <p class="empty">No attempt yet.</p>}
      {detail.state === "ready" && (
        <ol class="attempts">
          {detail.value.attempt_log.map((a) => (
            <li key={a.id}>
              <strong>
                Attempt {a.attempt_no}: {a.status_code === null ? "no answer" : `HTTP ${a.status_code}`}, {a.duration_ms} ms,{" "}
                {when(a.started_at)}
              </strong>
              {a.error_class && (
                <p>
                  {a.error_class}
                  {a.error_message ? `: ${a.error_message}` : ""}
                </p>
              )}
              {a.response_excerpt && <pre class="excerpt">{a.response_excerpt}</pre>}
            </li>
          ))}
        </ol>
      )}
      <div class="dialog-actions">
        <button type="button" onClick={onClose}>
          Close
        </button>
      </div>
    </Dialog>
  );
}

function Recover({ id, onDone }: { id: string; onDone: () => void }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [fields, setFields] = useState<Record<string, string>>({});
  const [status, setStatus] = useState("");
  const submit = async (event: SubmitEvent) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget as HTMLFormElement);
    const local = String(form.get("since") ?? "");
    setError(null);
    setFields({});
    setStatus("");
    const since = localToIso(local);
    if (!since) {
      setFields({ since: "Choose the date and time from which to re-queue." });
      return;
    }
    setBusy(true);
    try {
      const out = await webhooks.recover(id, since);
      setStatus(`${out.requeued} failed ${out.requeued === 1 ? "delivery" : "deliveries"} queued again.`);
      onDone();
    } catch (caught) {
      setError(caught);
      if (caught instanceof ApiError) setFields(caught.fieldErrors());
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <h2>Recover failed deliveries</h2>
      <form class="filters" onSubmit={submit} noValidate aria-label="Recover failed deliveries">
        <ProblemNotice error={error} />
        <Field id="recover-since" label="Failed since" hint="After fixing the receiver: every failed delivery since then is sent again." error={fields.since}>
          {(aria) => <input {...aria} name="since" type="datetime-local" />}
        </Field>
        <div class="filter-actions">
          <button type="submit" disabled={busy}>
            Recover failed deliveries
          </button>
        </div>
      </form>
      <p role="status" class="status-line">
        {status}
      </p>
    </>
  );
}
