import { useEffect, useState } from "preact/hooks";
import { ApiError } from "../api/client";
import type { AuditEntry } from "../api/types";
import { Field } from "../components/Field";
import { PageTitle } from "../components/PageTitle";
import { ProblemNotice } from "../components/ProblemNotice";
import { when } from "../format";
import { type AuditFilter, audit } from "../services/audit";
import { localToIso } from "../webhookStats";
import { Pager } from "../components/Pager";

type Load =
  | { state: "loading" }
  | { state: "error"; error: unknown }
  | { state: "ready"; items: AuditEntry[]; next: string | null };

const TEXT_FILTERS: ReadonlyArray<readonly [name: keyof AuditFilter, label: string, hint?: string]> = [
  ["actor_id", "Actor", "A key or user id"],
  ["action", "Action", "Exact, or a prefix like key.*"],
  ["target_type", "Target type", "e.g. api_key, webhook"],
  ["target_id", "Target id"],
];

/** The tenant's audit log, newest first: filters, pages, and each entry's before and after. */
export default function AuditLog() {
  const [filter, setFilter] = useState<AuditFilter>({});
  const [fields, setFields] = useState<Record<string, string>>({});
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const cursor = cursors[cursors.length - 1] ?? null;
  const [load, setLoad] = useState<Load>({ state: "loading" });
  const [reloads, setReloads] = useState(0);

  useEffect(() => {
    const abort = new AbortController();
    setLoad({ state: "loading" });
    setFields({});
    audit
      .list(filter, cursor, abort.signal)
      .then((page) => setLoad({ state: "ready", items: page.items, next: page.next_cursor }))
      .catch((error: unknown) => {
        if (abort.signal.aborted) return;
        setLoad({ state: "error", error });
        if (error instanceof ApiError) setFields(error.fieldErrors());
      });
    return () => abort.abort();
  }, [filter, cursor, reloads]);

  const apply = (event: SubmitEvent) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget as HTMLFormElement);
    const text = (name: string) => String(form.get(name) ?? "").trim();
    const time = (name: string) => {
      const local = text(name);
      return local ? localToIso(local) ?? local : null;
    };
    setFilter({
      actor_id: text("actor_id"),
      action: text("action"),
      target_type: text("target_type"),
      target_id: text("target_id"),
      since: time("since"),
      until: time("until"),
    });
    setCursors([null]);
  };

  const forbidden = load.state === "error" && load.error instanceof ApiError && load.error.status === 403;
  return (
    <section>
      <PageTitle>Audit log</PageTitle>
      <p class="hint">Every change in this tenant, newest first. The log cannot be edited.</p>
      <form class="filters" onSubmit={apply} aria-label="Filter the audit log">
        {TEXT_FILTERS.map(([name, label, hint]) => (
          <Field key={name} id={`audit-${name}`} label={label} hint={hint} error={fields[name]}>
            {(aria) => <input {...aria} name={name} autoComplete="off" />}
          </Field>
        ))}
        <Field id="audit-since" label="From" error={fields.since}>
          {(aria) => <input {...aria} name="since" type="datetime-local" />}
        </Field>
        <Field id="audit-until" label="Until" error={fields.until}>
          {(aria) => <input {...aria} name="until" type="datetime-local" />}
        </Field>
        <div class="filter-actions">
          <button type="submit" class="secondary">
            Apply filters
          </button>
        </div>
      </form>
      {load.state === "loading" && (
        <p class="loading" role="status">
          Loading the audit log…
        </p>
      )}
      {load.state === "error" && (
        <div>
          <ProblemNotice error={load.error} />
          {forbidden ? (
            <p class="hint">
              Reading the audit log needs the <code>audit-log:read</code> scope, which this session does not have. Ask an
              admin or owner of the tenant for it.
            </p>
          ) : (
            <button type="button" class="secondary" onClick={() => setReloads((n) => n + 1)}>
              Try again
            </button>
          )}
        </div>
      )}
      {load.state === "ready" && load.items.length === 0 && <p class="empty">No entries match.</p>}
      {load.state === "ready" && load.items.length > 0 && (
        <div class="table-wrap" role="region" aria-label="Audit log table" tabIndex={0}>
          <table>
            <caption class="visually-hidden">Audit log entries, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Action</th>
                <th scope="col">Actor</th>
                <th scope="col">Target</th>
                <th scope="col">Changes</th>
              </tr>
            </thead>
            <tbody>
              {load.items.map((entry) => (
                <tr key={entry.id} data-entry-id={entry.id}>
                  <td>{when(entry.created_at)}</td>
                  <th scope="row" class="mono">
                    {entry.action}
                  </th>
                  <td class="mono">
                    {entry.actor_type}
                    {entry.actor_id ? ` ${entry.actor_id}` : ""}
                  </td>
                  <td class="mono">
                    {entry.target_type}
                    {entry.target_id ? ` ${entry.target_id}` : ""}
                  </td>
                  <td>
                    <Changes entry={entry} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {load.state === "ready" && (
        <Pager label="Pages of the audit log" cursors={cursors} setCursors={setCursors} next={load.next} />
      )}
    </section>
  );
}

function json(value: Record<string, unknown> | null): string {
  return value === null ? "(none)" : JSON.stringify(value, null, 2);
}

/** An entry's before and after, as JSON text, shown when opened. */
function Changes({ entry }: { entry: AuditEntry }) {
  if (entry.before === null && entry.after === null) return <span class="hint">No details</span>;
  return (
    <details class="changes">
      <summary>
        Before and after<span class="visually-hidden"> of {entry.action}</span>
      </summary>
      <h3 class="changes-title">Before</h3>
      <pre class="changes-json">{json(entry.before)}</pre>
      <h3 class="changes-title">After</h3>
      <pre class="changes-json">{json(entry.after)}</pre>
    </details>
  );
}
