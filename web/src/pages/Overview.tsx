import { useEffect, useState } from "preact/hooks";
import type { Me, Summary } from "../api/types";
import { PageTitle } from "../components/PageTitle";
import { ProblemNotice } from "../components/ProblemNotice";
import { count, when } from "../format";
import { follow } from "../live";
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
  const [live, setLive] = useState<"connecting" | "live" | "offline">("connecting");
  const readable = me.scopes.includes("admin") || me.scopes.includes("stats:read");

  useEffect(() => {
    if (!readable) return;
    const channels = summaryChannels(me.scopes);
    const view = follow({
      url: channels.length ? streamUrl(channels) : null,
      refresh: async (signal) => {
        try {
          setSummary(await stats.summary(signal));
          setError(null);
        } catch (caught) {
          if (!signal.aborted) setError(caught);
          throw caught;
        }
      },
      onState: setLive,
    });
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
        <p class={`live live-${live}`} role="status">
          {live === "live" ? "Live" : live === "offline" ? "Offline: reconnecting" : "Connecting…"}
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
    </section>
  );
}
