import { useCallback, useEffect, useState } from "preact/hooks";
import { ApiError } from "../api/client";
import type { ApiKey, ApiKeyCreated, Me, Tiers } from "../api/types";
import { Dialog } from "../components/Dialog";
import { Field } from "../components/Field";
import { KeyUsageView } from "../components/KeyUsageView";
import { PageTitle } from "../components/PageTitle";
import { ProblemNotice } from "../components/ProblemNotice";
import { SecretOnce } from "../components/SecretOnce";
import { endOfDay, limits, when } from "../format";
import { groupScopes } from "../scopes";
import { keys } from "../services/keys";
import { Pager } from "../components/Pager";

type Load =
  | { state: "loading" }
  | { state: "error"; error: unknown }
  | { state: "ready"; items: ApiKey[]; next: string | null };

type Open =
  | { kind: "none" }
  | { kind: "create" }
  | { kind: "created"; key: ApiKeyCreated; rotated: boolean }
  | { kind: "rotate"; key: ApiKey }
  | { kind: "revoke"; key: ApiKey }
  | { kind: "usage"; key: ApiKey };

export default function ApiKeys({ me }: { me: Me }) {
  // The cursors of the pages before this one (null: the first page), for "Previous".
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const cursor = cursors[cursors.length - 1] ?? null;
  const [load, setLoad] = useState<Load>({ state: "loading" });
  const [open, setOpen] = useState<Open>({ kind: "none" });
  const [status, setStatus] = useState("");
  const [reloads, setReloads] = useState(0);
  const canWrite = me.scopes.includes("admin") || me.scopes.includes("keys:write");

  useEffect(() => {
    const abort = new AbortController();
    setLoad({ state: "loading" });
    keys
      .list(cursor, abort.signal)
      .then((page) => setLoad({ state: "ready", items: page.items, next: page.next_cursor }))
      .catch((error: unknown) => {
        if (!abort.signal.aborted) setLoad({ state: "error", error });
      });
    return () => abort.abort();
  }, [cursor, reloads]);

  const reload = useCallback(() => setReloads((n) => n + 1), []);
  const close = () => setOpen({ kind: "none" });

  return (
    <section>
      <div class="page-head">
        <PageTitle>API keys</PageTitle>
        {canWrite && (
          <button type="button" onClick={() => setOpen({ kind: "create" })}>
            Create key
          </button>
        )}
      </div>
      <p class="lead">
        Keys authenticate programs calling the API with <code>Authorization: Bearer</code>.
      </p>
      <p role="status" class="status-line">
        {status}
      </p>
      <KeyTable
        load={load}
        canWrite={canWrite}
        onRetry={reload}
        onRotate={(key) => setOpen({ kind: "rotate", key })}
        onRevoke={(key) => setOpen({ kind: "revoke", key })}
        onUsage={(key) => setOpen({ kind: "usage", key })}
      />
      {load.state === "ready" && (
        <Pager label="Pages of keys" cursors={cursors} setCursors={setCursors} next={load.next} />
      )}
      {open.kind === "create" && (
        <CreateKey
          scopes={me.scopes}
          onClose={close}
          onCreated={(key) => {
            setOpen({ kind: "created", key, rotated: false });
            setStatus(`Key ${key.name} created.`);
            setCursors([null]);
            reload();
          }}
        />
      )}
      {open.kind === "created" && <NewKey created={open.key} rotated={open.rotated} onClose={close} />}
      {open.kind === "usage" && (
        <Dialog id="usage" title={`Usage of ${open.key.name}`} onClose={close}>
          <KeyUsageView apiKey={open.key} />
          <div class="dialog-actions">
            <button type="button" onClick={close}>
              Close
            </button>
          </div>
        </Dialog>
      )}
      {open.kind === "rotate" && (
        <Confirm
          id="rotate"
          title={`Rotate ${open.key.name}?`}
          action="Rotate key"
          run={() => keys.rotate(open.key.id)}
          onClose={close}
          onDone={(key) => {
            setOpen({ kind: "created", key: key as ApiKeyCreated, rotated: true });
            setStatus(`Key ${open.key.name} rotated.`);
            reload();
          }}
        >
          <p>
            A new secret replaces this key's. The old secret keeps working for 24 hours, so the
            programs using it can move to the new one.
          </p>
        </Confirm>
      )}
      {open.kind === "revoke" && (
        <Confirm
          id="revoke"
          title={`Revoke ${open.key.name}?`}
          action="Revoke key"
          danger
          run={() => keys.revoke(open.key.id)}
          onClose={close}
          onDone={() => {
            close();
            setStatus(`Key ${open.key.name} revoked.`);
            reload();
          }}
        >
          <p>
            Every request with this key is refused from now on, on every node. This cannot be
            undone.
          </p>
        </Confirm>
      )}
    </section>
  );
}

interface TableProps {
  load: Load;
  canWrite: boolean;
  onRetry: () => void;
  onRotate: (key: ApiKey) => void;
  onRevoke: (key: ApiKey) => void;
  onUsage: (key: ApiKey) => void;
}

function KeyTable({ load, canWrite, onRetry, onRotate, onRevoke, onUsage }: TableProps) {
  if (load.state === "loading") {
    return (
      <p class="loading" role="status">
        Loading keys…
      </p>
    );
  }
  if (load.state === "error") {
    return (
      <div>
        <ProblemNotice error={load.error} />
        <button type="button" class="secondary" onClick={onRetry}>
          Try again
        </button>
      </div>
    );
  }
  if (load.items.length === 0) {
    return <p class="empty">No keys yet. Create one to call the API from a program.</p>;
  }
  return (
    <div class="table-wrap" role="region" aria-label="API keys table" tabIndex={0}>
      <table>
        <caption class="visually-hidden">API keys, newest first</caption>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Prefix</th>
            <th scope="col">Scopes</th>
            <th scope="col">Tier</th>
            <th scope="col">Last used</th>
            <th scope="col">Expires</th>
            <th scope="col">Status</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {load.items.map((key) => (
            <tr key={key.id} data-key-id={key.id}>
              <th scope="row" class="key-name">
                {key.name}
              </th>
              <td class="mono">{key.prefix}</td>
              <td>
                <ul class="chips">
                  {key.scopes.map((scope) => (
                    <li key={scope}>{scope}</li>
                  ))}
                </ul>
              </td>
              <td>{key.tier}</td>
              <td>{when(key.last_used_at)}</td>
              <td>{when(key.expires_at)}</td>
              <td>
                <span class={`badge badge-${key.status}`}>{key.status}</span>
              </td>
              <td class="actions">
                <button
                  type="button"
                  class="secondary"
                  aria-label={`Usage of ${key.name}`}
                  onClick={() => onUsage(key)}
                >
                  Usage
                </button>
                {canWrite && key.status === "active" && (
                    <>
                      <button
                        type="button"
                        class="secondary"
                        aria-label={`Rotate ${key.name}`}
                        onClick={() => onRotate(key)}
                      >
                        Rotate
                      </button>
                      <button
                        type="button"
                        class="danger"
                        aria-label={`Revoke ${key.name}`}
                        onClick={() => onRevoke(key)}
                      >
                        Revoke
                      </button>
                  </>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

interface CreateProps {
  scopes: string[];
  onClose: () => void;
  onCreated: (key: ApiKeyCreated) => void;
}

function CreateKey({ scopes, onClose, onCreated }: CreateProps) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [fields, setFields] = useState<Record<string, string>>({});
  const groups = groupScopes(scopes.filter((s) => s !== "system:admin"));
  const [tiers, setTiers] = useState<Tiers | null>(null);
  const [tiersError, setTiersError] = useState<unknown>(null);

  useEffect(() => {
    const abort = new AbortController();
    keys
      .tiers(abort.signal)
      .then(setTiers)
      .catch((caught: unknown) => !abort.signal.aborted && setTiersError(caught));
    return () => abort.abort();
  }, []);

  const submit = async (event: SubmitEvent) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget as HTMLFormElement);
    setBusy(true);
    setError(null);
    setFields({});
    try {
      onCreated(
        await keys.create({
          name: String(form.get("name") ?? ""),
          description: String(form.get("description") ?? ""),
          scopes: form.getAll("scopes").map(String),
          tier: form.get("tier") ? String(form.get("tier")) : undefined,
          expires_at: endOfDay(String(form.get("expires") ?? "")),
        }),
      );
    } catch (caught) {
      setError(caught);
      if (caught instanceof ApiError) {
        const byField = caught.fieldErrors();
        if ("expires_at" in byField) byField.expires = byField.expires_at ?? "";
        setFields(byField);
      }
    } finally {
      setBusy(false);
    }
  };

  return (
    <Dialog id="create-key" title="Create an API key" onClose={onClose}>
      <form onSubmit={submit} noValidate>
        <ProblemNotice error={error} />
        <Field id="key-name" label="Name" error={fields.name}>
          {(aria) => <input {...aria} name="name" autoComplete="off" />}
        </Field>
        <Field id="key-description" label="Description (optional)" error={fields.description}>
          {(aria) => <textarea {...aria} name="description" rows={2} />}
        </Field>
        <fieldset
          class="scopes"
          aria-invalid={fields.scopes ? "true" : undefined}
          aria-describedby={fields.scopes ? "key-scopes-error" : "key-scopes-hint"}
        >
          <legend>Scopes</legend>
          <p class="hint" id="key-scopes-hint">
            What the key may do. A key never holds a scope you lack.
          </p>
          {fields.scopes && (
            <p class="field-error" id="key-scopes-error" role="alert">
              {fields.scopes}
            </p>
          )}
          <div class="scope-groups">
            {groups.map((group) => (
              <fieldset key={group.resource} class="scope-group">
                <legend>{group.resource}</legend>
                {group.scopes.map((scope) => (
                  <label key={scope} class="check">
                    <input type="checkbox" name="scopes" value={scope} />
                    {scope.includes(":") ? scope.slice(scope.indexOf(":") + 1) : "everything in the tenant"}
                  </label>
                ))}
              </fieldset>
            ))}
          </div>
        </fieldset>
        {tiers ? (
          <Field
            id="key-tier"
            label="Rate-limit tier"
            hint="Requests the key may make per window."
            error={fields.tier}
          >
            {(aria) => (
              <select {...aria} name="tier" defaultValue={tiers.default}>
                {tiers.items.map((tier) => (
                  <option key={tier.name} value={tier.name}>
                    {tier.name}: {limits(tier.limits)}
                  </option>
                ))}
              </select>
            )}
          </Field>
        ) : tiersError ? (
          <p class="hint">The tiers could not be read: the key gets the default tier.</p>
        ) : (
          <p class="hint" role="status">
            Loading tiers…
          </p>
        )}
        <Field
          id="key-expires"
          label="Expires (optional)"
          hint="At the end of this day; no date: never."
          error={fields.expires}
        >
          {(aria) => <input {...aria} name="expires" type="date" />}
        </Field>
        <div class="dialog-actions">
          <button type="button" class="secondary" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" disabled={busy}>
            {busy ? "Creating…" : "Create key"}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

function NewKey({
  created,
  rotated,
  onClose,
}: {
  created: ApiKeyCreated;
  rotated: boolean;
  onClose: () => void;
}) {
  return (
    <Dialog id="new-key" title={rotated ? "Key rotated" : "Key created"} onClose={onClose}>
      <SecretOnce id="new-key-value" label={`The key ${created.name}`} value={created.key} />
      {rotated && created.previous_expires_at && (
        <p>The old secret works until {when(created.previous_expires_at)}.</p>
      )}
      <div class="dialog-actions">
        <button type="button" onClick={onClose}>
          Done
        </button>
      </div>
    </Dialog>
  );
}

interface ConfirmProps {
  id: string;
  title: string;
  action: string;
  danger?: boolean;
  run: () => Promise<unknown>;
  onClose: () => void;
  onDone: (result: unknown) => void;
  children: preact.ComponentChildren;
}

function Confirm({ id, title, action, danger, run, onClose, onDone, children }: ConfirmProps) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const confirm = async () => {
    setBusy(true);
    setError(null);
    try {
      onDone(await run());
    } catch (caught) {
      setError(caught);
      setBusy(false);
    }
  };
  return (
    <Dialog id={id} title={title} onClose={onClose}>
      {children}
      <ProblemNotice error={error} />
      <div class="dialog-actions">
        <button type="button" class="secondary" onClick={onClose}>
          Cancel
        </button>
        <button type="button" class={danger ? "danger" : undefined} disabled={busy} onClick={confirm}>
          {action}
        </button>
      </div>
    </Dialog>
  );
}
