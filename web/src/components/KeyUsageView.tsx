import type { ComponentType } from "preact";
import { useEffect, useMemo, useState } from "preact/hooks";
import type { ApiKey, KeyUsage } from "../api/types";
import { count, when } from "../format";
import { keys } from "../services/keys";
import { CLASSES, fill, type Series, SPANS, type Span } from "../usage";
import { ProblemNotice } from "./ProblemNotice";

type Chart = ComponentType<{ series: Series; label: string }>;

/** A key's usage: totals, a chart per span, and the same figures as a table. */
export function KeyUsageView({ apiKey }: { apiKey: ApiKey }) {
  const [usage, setUsage] = useState<KeyUsage | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [span, setSpan] = useState<Span>("minute");
  const [Chart, setChart] = useState<Chart | null>(null);

  useEffect(() => {
    const abort = new AbortController();
    keys
      .usage(apiKey.id, abort.signal)
      .then(setUsage)
      .catch((caught: unknown) => !abort.signal.aborted && setError(caught));
    // The chart library is loaded with the first usage shown, not with the page.
    import("./UsageChart")
      .then((module) => setChart(() => module.default))
      .catch((caught: unknown) => setError(caught));
    return () => abort.abort();
  }, [apiKey.id]);

  const series = useMemo(
    () => (usage ? fill(usage[span], span, Date.now() / 1000) : null),
    [usage, span],
  );

  if (error) return <ProblemNotice error={error} />;
  if (!usage || !series) {
    return (
      <p class="loading" role="status">
        Loading usage…
      </p>
    );
  }
  const totals = usage.totals_30d;
  const rows = usage[span].filter((point) => point.requests > 0);
  const spanTotal = rows.reduce((sum, point) => sum + point.requests, 0);
  const label = `${SPANS[span].label}: ${count(spanTotal)} requests.`;
  return (
    <div class="usage">
      <dl class="breakdown usage-totals" aria-label="Requests in the last 30 days">
        <div>
          <dt>Requests, 30 days</dt>
          <dd>{count(totals.requests)}</dd>
        </div>
        {CLASSES.map(([key, name]) => (
          <div key={key}>
            <dt>{name}</dt>
            <dd>{count(totals[key])}</dd>
          </div>
        ))}
        <div>
          <dt>Rate-limited (429)</dt>
          <dd>{count(totals.rate_limited)}</dd>
        </div>
        <div>
          <dt>Last used</dt>
          <dd>{when(usage.last_used_at)}</dd>
        </div>
      </dl>
      <fieldset class="span-choice">
        <legend>Period</legend>
        {(Object.keys(SPANS) as Span[]).map((name) => (
          <label key={name} class="check">
            <input
              type="radio"
              name="usage-span"
              value={name}
              checked={span === name}
              onChange={() => setSpan(name)}
            />
            {SPANS[name].label}
          </label>
        ))}
      </fieldset>
      {Chart ? <Chart series={series} label={label} /> : <p role="status">Loading the chart…</p>}
      {rows.length === 0 ? (
        <p class="empty">No requests in this period.</p>
      ) : (
        <details>
          <summary>The figures as a table</summary>
          <div class="table-wrap" role="region" aria-label="Usage table" tabIndex={0}>
            <table>
              <thead>
                <tr>
                  <th scope="col">Period from</th>
                  <th scope="col">Requests</th>
                  {CLASSES.map(([key, name]) => (
                    <th key={key} scope="col">
                      {name}
                    </th>
                  ))}
                </tr>
              </thead>
              <tbody>
                {rows.map((point) => (
                  <tr key={point.start}>
                    <th scope="row">{when(point.start)}</th>
                    <td>{count(point.requests)}</td>
                    {CLASSES.map(([key]) => (
                      <td key={key}>{count(point[key])}</td>
                    ))}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </details>
      )}
    </div>
  );
}
