import { useCallback, useEffect, useState } from "preact/hooks";
import { ApiError } from "../api/client";
import type { Attempt, Catalog, Endpoint, EndpointCreated, EndpointWrite, Me, RetryPolicy } from "../api/types";
import { Confirm } from "../components/Confirm";
import { Dialog } from "../components/Dialog";
import { Field } from "../components/Field";
import { PageTitle } from "../components/PageTitle";
import { ProblemNotice } from "../components/ProblemNotice";
import { SecretOnce } from "../components/SecretOnce";
import { when } from "../format";
import { holds } from "../grants";
import { eventTypes } from "../services/eventTypes";
import { webhooks } from "../services/webhooks";
import { headerLines, parseHeaders, patternList } from "../webhookForm";
import { Pager } from "../components/Pager";

type Load =
  | { state: "loading" }
  | { state: "error"; error: unknown }
  | { state: "ready"; items: Endpoint[]; next: string | null };

type Open =
  | { kind: "none" }
  | { kind: "create" }
  | { kind: "edit"; endpoint: Endpoint }
  | { kind: "created"; endpoint: EndpointCreated }
  | { kind: "secret"; endpoint: Endpoint }
  | { kind: "delete"; endpoint: Endpoint };

type Tested = { state: "sending" } | { state: "done"; attempt: Attempt } | { state: "error"; error: unknown };

export default function Webhooks({ me }: { me: Me }) {
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const cursor = cursors[cursors.length - 1] ?? null;
  const [load, setLoad] = useState<Load>({ state: "loading" });
  const [open, setOpen] = useState<Open>({ kind: "none" });
  const [status, setStatus] = useState("");
  const [reloads, setReloads] = useState(0);
  const [tested, setTested] = useState<Record<string, Tested>>({});
  const [toggleError, setToggleError] = useState<unknown>(null);
  const canWrite = holds(me.scopes, "webhooks:write");
  const canSecrets = holds(me.scopes, "webhooks:secrets");

  useEffect(() => {
    const abort = new AbortController();
    setLoad({ state: "loading" });
    webhooks
      .list(cursor, abort.signal)
      .then((page) => setLoad({ state: "ready", items: page.items, next: page.next_cursor }))
      .catch((error: unknown) => {
        if (!abort.signal.aborted) setLoad({ state: "error", error });
      });
    return () => abort.abort();
  }, [cursor, reloads]);

  const reload = useCallback(() => setReloads((n) => n + 1), []);
  const close = () => setOpen({ kind: "none" });

  const replace = (endpoint: Endpoint) =>
    setLoad((current) =>
      current.state === "ready"
        ? { ...current, items: current.items.map((e) => (e.id === endpoint.id ? endpoint : e)) }
        : current,
    );

  const toggle = async (endpoint: Endpoint) => {
    setToggleError(null);
    try {
      const updated = await webhooks.setEnabled(endpoint.id, !endpoint.enabled);
      replace(updated);
      setStatus(`${updated.url} ${updated.enabled ? "enabled" : "disabled"}.`);
    } catch (caught) {
      setToggleError(caught);
    }
  };

  const test = async (endpoint: Endpoint) => {
    setTested((all) => ({ ...all, [endpoint.id]: { state: "sending" } }));
    try {
      const attempt = await webhooks.test(endpoint.id);
      setTested((all) => ({ ...all, [endpoint.id]: { state: "done", attempt } }));
    } catch (error) {
      setTested((all) => ({ ...all, [endpoint.id]: { state: "error", error } }));
    }
  };

  return (
    <section>
      <div class="page-head">
        <PageTitle>Webhooks</PageTitle>
        {canWrite && (
          <button type="button" onClick={() => setOpen({ kind: "create" })}>
            Add endpoint
          </button>
        )}
      </div>
      <p class="lead">Forecourt posts every matching event to these URLs, signed, with retries.</p>
      <p role="status" class="status-line">
        {status}
      </p>
      <ProblemNotice error={toggleError} />
      {load.state === "loading" && (
        <p class="loading" role="status">
          Loading endpoints…
        </p>
      )}
      {load.state === "error" && (
        <div>
          <ProblemNotice error={load.error} />
          <button type="button" class="secondary" onClick={reload}>
            Try again
          </button>
        </div>
      )}
      {load.state === "ready" && load.items.length === 0 && (
        <p class="empty">No endpoints yet. Add one to receive events at a URL of yours.</p>
      )}
      {load.state === "ready" && load.items.length > 0 && (
        <div class="table-wrap" role="region" aria-label="Webhook endpoints table" tabIndex={0}>
          <table>
            <caption class="visually-hidden">Webhook endpoints, newest first</caption>
            <thead>
              <tr>
                <th scope="col">URL</th>
                <th scope="col">Event types</th>
                <th scope="col">Enabled</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {load.items.map((endpoint) => (
                <EndpointRow
                  key={endpoint.id}
                  endpoint={endpoint}
                  canWrite={canWrite}
                  canSecrets={canSecrets}
                  tested={tested[endpoint.id]}
                  onToggle={() => toggle(endpoint)}
                  onTest={() => test(endpoint)}
                  onEdit={() => setOpen({ kind: "edit", endpoint })}
                  onSecret={() => setOpen({ kind: "secret", endpoint })}
                  onDelete={() => setOpen({ kind: "delete", endpoint })}
                />
              ))}
            </tbody>
          </table>
        </div>
      )}
      {load.state === "ready" && (
        <Pager label="Pages of endpoints" cursors={cursors} setCursors={setCursors} next={load.next} />
      )}
      {(open.kind === "create" || open.kind === "edit") && (
        <EndpointForm
          endpoint={open.kind === "edit" ? open.endpoint : null}
          onClose={close}
          onSaved={(saved, created) => {
            if (created) {
              setOpen(created.secret ? { kind: "created", endpoint: created } : { kind: "none" });
              setStatus(`Endpoint ${saved.url} added.`);
              setCursors([null]);
              reload();
            } else {
              close();
              replace(saved);
              setStatus(`Endpoint ${saved.url} saved.`);
            }
          }}
        />
      )}
      {open.kind === "created" && open.endpoint.secret && (
        <Dialog id="new-endpoint" title="Endpoint added" onClose={close}>
          <p>Receivers verify each delivery's signature with this secret.</p>
          <SecretOnce id="new-endpoint-secret" label="Signing secret" value={open.endpoint.secret} />
          <div class="dialog-actions">
            <button type="button" onClick={close}>
              Done
            </button>
          </div>
        </Dialog>
      )}
      {open.kind === "secret" && <SecretDialog endpoint={open.endpoint} onClose={close} onRotated={reload} />}
      {open.kind === "delete" && (
        <Confirm
          id="delete-endpoint"
          title={`Delete ${open.endpoint.url}?`}
          action="Delete endpoint"
          danger
          run={() => webhooks.remove(open.endpoint.id)}
          onClose={close}
          onDone={() => {
            close();
            setStatus(`Endpoint ${open.endpoint.url} deleted.`);
            reload();
          }}
        >
          <p>Its deliveries and their attempts are deleted with it. This cannot be undone.</p>
        </Confirm>
      )}
    </section>
  );
}

interface RowProps {
  endpoint: Endpoint;
  canWrite: boolean;
  canSecrets: boolean;
  tested: Tested | undefined;
  onToggle: () => void;
  onTest: () => void;
  onEdit: () => void;
  onSecret: () => void;
  onDelete: () => void;
}

function EndpointRow({ endpoint, canWrite, canSecrets, tested, onToggle, onTest, onEdit, onSecret, onDelete }: RowProps) {
  const url = endpoint.url;
  return (
    <>
      <tr data-endpoint-id={endpoint.id}>
        <th scope="row" class="endpoint-url">
          <a class="mono" href={`/settings/webhooks/${encodeURIComponent(endpoint.id)}`}>
            {url}
          </a>
          {endpoint.description && <p class="hint">{endpoint.description}</p>}
          {endpoint.disabled_reason && <p class="hint">Disabled: {endpoint.disabled_reason}</p>}
        </th>
        <td>
          {endpoint.event_types.length === 0 ? (
            "Every type"
          ) : (
            <ul class="chips">
              {endpoint.event_types.map((type) => (
                <li key={type}>{type}</li>
              ))}
            </ul>
          )}
        </td>
        <td>
          <label class="check">
            <input
              type="checkbox"
              role="switch"
              checked={endpoint.enabled}
              disabled={!canWrite}
              onChange={onToggle}
              aria-label={`Enabled: ${url}`}
            />
            {endpoint.enabled ? "On" : "Off"}
          </label>
        </td>
        <td class="actions">
          {canWrite && (
            <>
              <button type="button" class="secondary" aria-label={`Test ${url}`} onClick={onTest}>
                Test
              </button>
              <button type="button" class="secondary" aria-label={`Edit ${url}`} onClick={onEdit}>
                Edit
              </button>
            </>
          )}
          {canSecrets && (
            <button type="button" class="secondary" aria-label={`Secret of ${url}`} onClick={onSecret}>
              Secret
            </button>
          )}
          {canWrite && (
            <button type="button" class="danger" aria-label={`Delete ${url}`} onClick={onDelete}>
              Delete
            </button>
          )}
        </td>
      </tr>
      {tested && (
        <tr class="test-row">
          <td colSpan={4}>
            <TestResult tested={tested} />
          </td>
        </tr>
      )}
    </>
  );
}

function TestResult({ tested }: { tested: Tested }) {
  if (tested.state === "sending") {
    return (
      <p role="status" class="test-result">
        Sending a test event…
      </p>
    );
  }
  if (tested.state === "error") return <ProblemNotice error={tested.error} />;
  const a = tested.attempt;
  const ok = a.status_code !== null && a.status_code >= 200 && a.status_code < 300;
  return (
    <div role="status" class={`test-result ${ok ? "test-ok" : "test-failed"}`}>
      <strong>
        Test {ok ? "delivered" : "failed"}: {a.status_code === null ? "no answer" : `HTTP ${a.status_code}`} in{" "}
        {a.duration_ms} ms
      </strong>
      {a.error_class && (
        <p>
          {a.error_class}
          {a.error_message ? `: ${a.error_message}` : ""}
        </p>
      )}
      {a.response_excerpt && <pre class="excerpt">{a.response_excerpt}</pre>}
    </div>
  );
}

interface FormProps {
  endpoint: Endpoint | null;
  onClose: () => void;
  onSaved: (saved: Endpoint, created: EndpointCreated | null) => void;
}

function EndpointForm({ endpoint, onClose, onSaved }: FormProps) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [fields, setFields] = useState<Record<string, string>>({});
  const [catalog, setCatalog] = useState<Catalog | null>(null);
  const [catalogError, setCatalogError] = useState<unknown>(null);
  const [retryKind, setRetryKind] = useState<RetryPolicy["kind"]>(endpoint?.retry_policy.kind ?? "exponential");
  const [secretMode, setSecretMode] = useState<"generated" | "custom">("generated");

  useEffect(() => {
    const abort = new AbortController();
    eventTypes
      .catalog(abort.signal)
      .then(setCatalog)
      .catch((caught: unknown) => !abort.signal.aborted && setCatalogError(caught));
    return () => abort.abort();
  }, []);

  const chosen = new Set(endpoint?.event_types ?? []);
  const known = new Set<string>(["*"]);
  for (const category of catalog?.categories ?? []) {
    known.add(`${category.name}.*`);
    for (const type of category.types) known.add(type.name);
  }
  const others = [...chosen].filter((type) => !known.has(type));

  const submit = async (event: SubmitEvent) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget as HTMLFormElement);
    const text = (name: string) => String(form.get(name) ?? "");
    const local: Record<string, string> = {};
    const { headers, bad } = parseHeaders(text("headers"));
    if (bad) local.headers = bad;
    const rate = text("rate_limit_per_s").trim();
    const policy: RetryPolicy = {
      kind: retryKind,
      max_attempts: retryKind === "none" ? 1 : Number(text("max_attempts") || 8),
      interval_s: Number(text("interval_s") || 60),
    };
    const body: EndpointWrite = {
      url: text("url").trim(),
      description: text("description"),
      event_types: [...new Set([...form.getAll("event_types").map(String), ...patternList(text("patterns"))])],
      headers,
      retry_policy: policy,
      rate_limit_per_s: rate ? Number(rate) : null,
    };
    if (!endpoint && secretMode === "custom") body.secret = text("secret");
    setError(null);
    setFields(local);
    if (bad) return;
    setBusy(true);
    try {
      if (endpoint) onSaved(await webhooks.update(endpoint.id, body), null);
      else {
        const created = await webhooks.create(body);
        onSaved(created, created);
      }
    } catch (caught) {
      setError(caught);
      if (caught instanceof ApiError) setFields(caught.fieldErrors());
    } finally {
      setBusy(false);
    }
  };

  const title = endpoint ? "Edit endpoint" : "Add an endpoint";
  return (
    <Dialog id="endpoint-form" title={title} onClose={onClose}>
      <form onSubmit={submit} noValidate>
        <ProblemNotice error={error} />
        <Field id="endpoint-url" label="URL" hint="http or https; it must resolve to a public address." error={fields.url}>
          {(aria) => <input {...aria} name="url" type="url" autoComplete="off" defaultValue={endpoint?.url ?? ""} />}
        </Field>
        <Field id="endpoint-description" label="Description (optional)" error={fields.description}>
          {(aria) => <textarea {...aria} name="description" rows={2} defaultValue={endpoint?.description ?? ""} />}
        </Field>
        <fieldset
          class="scopes"
          aria-invalid={fields.event_types ? "true" : undefined}
          aria-describedby={fields.event_types ? "endpoint-types-error" : "endpoint-types-hint"}
        >
          <legend>Event types</legend>
          <p class="hint" id="endpoint-types-hint">
            None chosen: every type. A category's "all" takes its future types too.
          </p>
          {fields.event_types && (
            <p class="field-error" id="endpoint-types-error" role="alert">
              {fields.event_types}
            </p>
          )}
          <label class="check">
            <input type="checkbox" name="event_types" value="*" defaultChecked={chosen.has("*")} />
            Every type (*)
          </label>
          {catalog ? (
            <div class="scope-groups">
              {catalog.categories.map((category) => (
                <fieldset key={category.name} class="scope-group">
                  <legend>{category.name}</legend>
                  <label class="check">
                    <input
                      type="checkbox"
                      name="event_types"
                      value={`${category.name}.*`}
                      defaultChecked={chosen.has(`${category.name}.*`)}
                    />
                    all ({category.name}.*)
                  </label>
                  {category.types.map((type) => (
                    <div key={type.name} class="type-choice">
                      <label class="check">
                        <input
                          type="checkbox"
                          name="event_types"
                          value={type.name}
                          defaultChecked={chosen.has(type.name)}
                          aria-describedby={type.description ? `type-${type.name}-about` : undefined}
                        />
                        {type.name}
                      </label>
                      {type.description && (
                        <p class="hint type-about" id={`type-${type.name}-about`}>
                          {type.description}
                        </p>
                      )}
                    </div>
                  ))}
                </fieldset>
              ))}
            </div>
          ) : catalogError ? (
            <p class="hint">The event types could not be read: type patterns below.</p>
          ) : (
            <p class="hint" role="status">
              Loading event types…
            </p>
          )}
          <Field id="endpoint-patterns" label="Other types or patterns" hint="One per line, such as invoice.* or invoice.paid.">
            {(aria) => <textarea {...aria} name="patterns" rows={2} defaultValue={others.join("\n")} />}
          </Field>
        </fieldset>
        <Field
          id="endpoint-headers"
          label="Custom headers (optional)"
          hint="One per line, Name: value. A value read as *** keeps the stored one."
          error={fields.headers}
        >
          {(aria) => (
            <textarea {...aria} name="headers" rows={2} class="mono" defaultValue={headerLines(endpoint?.headers ?? {})} />
          )}
        </Field>
        <Field id="endpoint-retry" label="Retry policy" error={fields.retry_policy}>
          {(aria) => (
            <select
              {...aria}
              name="retry_kind"
              value={retryKind}
              onChange={(e) => setRetryKind(e.currentTarget.value as RetryPolicy["kind"])}
            >
              <option value="exponential">Exponential (5 s, 5 min, 30 min, 2 h, …)</option>
              <option value="linear">Linear (a fixed interval)</option>
              <option value="none">None (one attempt)</option>
            </select>
          )}
        </Field>
        {retryKind !== "none" && (
          <Field id="endpoint-attempts" label="Attempts at most" hint="1 to 20.">
            {(aria) => (
              <input
                {...aria}
                name="max_attempts"
                type="number"
                min={1}
                max={20}
                defaultValue={String(endpoint?.retry_policy.max_attempts ?? 8)}
              />
            )}
          </Field>
        )}
        {retryKind === "linear" && (
          <Field id="endpoint-interval" label="Seconds between attempts">
            {(aria) => (
              <input
                {...aria}
                name="interval_s"
                type="number"
                min={1}
                defaultValue={String(endpoint?.retry_policy.interval_s ?? 60)}
              />
            )}
          </Field>
        )}
        <Field
          id="endpoint-rate"
          label="Rate limit (optional)"
          hint="Deliveries per second to this endpoint; empty: no limit."
          error={fields.rate_limit_per_s}
        >
          {(aria) => (
            <input
              {...aria}
              name="rate_limit_per_s"
              type="number"
              min={1}
              defaultValue={endpoint?.rate_limit_per_s ? String(endpoint.rate_limit_per_s) : ""}
            />
          )}
        </Field>
        {!endpoint && (
          <fieldset>
            <legend>Signing secret</legend>
            <label class="check">
              <input
                type="radio"
                name="secret_mode"
                value="generated"
                checked={secretMode === "generated"}
                onChange={() => setSecretMode("generated")}
              />
              Generate one (shown once)
            </label>
            <label class="check">
              <input
                type="radio"
                name="secret_mode"
                value="custom"
                checked={secretMode === "custom"}
                onChange={() => setSecretMode("custom")}
              />
              Use my own
            </label>
            {secretMode === "custom" && (
              <Field id="endpoint-secret" label="Secret" hint="whsec_ and base64 of 24 to 64 bytes." error={fields.secret}>
                {(aria) => <input {...aria} name="secret" type="password" autoComplete="off" class="mono" />}
              </Field>
            )}
          </fieldset>
        )}
        <div class="dialog-actions">
          <button type="button" class="secondary" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" disabled={busy}>
            {busy ? "Saving…" : endpoint ? "Save endpoint" : "Add endpoint"}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

function SecretDialog({ endpoint, onClose, onRotated }: { endpoint: Endpoint; onClose: () => void; onRotated: () => void }) {
  const [secret, setSecret] = useState<string | null>(null);
  const [note, setNote] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [confirming, setConfirming] = useState(false);

  const run = async (rotate: boolean) => {
    setBusy(true);
    setError(null);
    try {
      const out = rotate ? await webhooks.rotateSecret(endpoint.id) : await webhooks.revealSecret(endpoint.id);
      setSecret(out.secret);
      setNote(
        rotate
          ? `Rotated. The old secret also signs until ${when(out.previous_secret_expires_at)}.`
          : out.secret
            ? ""
            : "This endpoint's secret was given when it was set: Forecourt never shows it.",
      );
      if (rotate) onRotated();
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
      setConfirming(false);
    }
  };

  return (
    <Dialog id="endpoint-secret-dialog" title={`Signing secret of ${endpoint.url}`} onClose={onClose}>
      <ProblemNotice error={error} />
      {secret && (
        <div class="field">
          <label for="endpoint-secret-value">Secret</label>
          <input id="endpoint-secret-value" class="mono" readOnly value={secret} />
        </div>
      )}
      <p role="status" class="hint">
        {note}
      </p>
      {confirming ? (
        <div class="notice notice-warning">
          <p>
            A new secret signs every delivery from now on; the old one signs too for 24 hours, so receivers can
            switch.
          </p>
          <div class="dialog-actions">
            <button type="button" class="secondary" onClick={() => setConfirming(false)}>
              Keep the secret
            </button>
            <button type="button" disabled={busy} onClick={() => run(true)}>
              Rotate now
            </button>
          </div>
        </div>
      ) : (
        <div class="dialog-actions">
          <button type="button" class="secondary" disabled={busy} onClick={() => run(false)}>
            Reveal
          </button>
          <button type="button" class="secondary" disabled={busy} onClick={() => setConfirming(true)}>
            Rotate
          </button>
          <button type="button" onClick={onClose}>
            Close
          </button>
        </div>
      )}
    </Dialog>
  );
}
