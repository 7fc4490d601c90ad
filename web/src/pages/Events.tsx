import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError } from "../api/client";
import type { Me, StoredEvent } from "../api/types";
import { Dialog } from "../components/Dialog";
import { Field } from "../components/Field";
import { PageTitle } from "../components/PageTitle";
import { ProblemNotice } from "../components/ProblemNotice";
import { when } from "../format";
import { holds } from "../grants";
import { follow, type Live } from "../live";
import { events, eventsChannel, parseData } from "../services/events";
import { streamUrl } from "../services/stats";
import { Pager } from "../components/Pager";

type Load =
  | { state: "loading" }
  | { state: "error"; error: unknown }
  | { state: "ready"; items: StoredEvent[]; next: string | null };

type LiveState = "connecting" | "live" | "offline" | "paused";

/** The tenant's events: the newest ones followed live from the stream (filtered by a type
 * pattern), older ones by pages, each event's envelope and data, and a test event to publish. */
export default function Events({ me }: { me: Me }) {
  const [pattern, setPattern] = useState("");
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const cursor = cursors[cursors.length - 1] ?? null;
  const [load, setLoad] = useState<Load>({ state: "loading" });
  const [liveState, setLiveState] = useState<LiveState>("connecting");
  const [shown, setShown] = useState<string | null>(null);
  const [reloads, setReloads] = useState(0);
  const live = useRef<Live | null>(null);
  const canPublish = holds(me.scopes, "events:publish");

  // The first page follows the stream; a later page is read once.
  useEffect(() => {
    setLoad({ state: "loading" });
    const read = async (signal: AbortSignal) => {
      try {
        const page = await events.list(pattern, cursor, signal);
        if (!signal.aborted) setLoad({ state: "ready", items: page.items, next: page.next_cursor });
      } catch (error) {
        if (!signal.aborted) setLoad({ state: "error", error });
      }
    };
    if (cursor !== null) {
      setLiveState("paused");
      const abort = new AbortController();
      void read(abort.signal);
      return () => abort.abort();
    }
    setLiveState("connecting");
    const view = (live.current = follow({
      url: streamUrl([eventsChannel(pattern)]),
      refresh: read,
      onState: setLiveState,
    }));
    return () => {
      view.stop();
      live.current = null;
    };
  }, [pattern, cursor, reloads]);

  const filter = (event: SubmitEvent) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget as HTMLFormElement);
    setPattern(String(form.get("pattern") ?? "").trim());
    setCursors([null]);
  };

  return (
    <section>
      <div class="page-head">
        <PageTitle>Events</PageTitle>
        <p class={`live live-${liveState === "paused" ? "offline" : liveState}`} role="status">
          {liveState === "live"
            ? "Live"
            : liveState === "offline"
              ? "Offline: reconnecting"
              : liveState === "paused"
                ? "Paused on an older page"
                : "Connecting…"}
        </p>
      </div>
      <form class="filters" onSubmit={filter} aria-label="Filter events">
        <Field id="events-pattern" label="Type pattern" hint="Exact, a prefix like order.*, or empty for every type">
          {(aria) => <input {...aria} name="pattern" autoComplete="off" />}
        </Field>
        <div class="filter-actions">
          <button type="submit" class="secondary">
            Apply filter
          </button>
        </div>
      </form>
      {load.state === "loading" && (
        <p class="loading" role="status">
          Loading events…
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
      {load.state === "ready" && load.items.length === 0 && <p class="empty">No events match.</p>}
      {load.state === "ready" && load.items.length > 0 && (
        <div class="table-wrap" role="region" aria-label="Events table" tabIndex={0}>
          <table>
            <caption class="visually-hidden">Events, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Type</th>
                <th scope="col">Subject</th>
                <th scope="col">Time</th>
                <th scope="col">Severity</th>
                <th scope="col">Details</th>
              </tr>
            </thead>
            <tbody>
              {load.items.map((e) => (
                <tr key={e.event_id} data-event-id={e.event_id}>
                  <th scope="row" class="mono event-text">
                    {e.type}
                  </th>
                  <td class="event-text">{e.subject ?? ""}</td>
                  <td>{when(e.time)}</td>
                  <td>{e.severity}</td>
                  <td>
                    <button
                      type="button"
                      class="secondary"
                      aria-label={`Details of event ${e.event_id}`}
                      onClick={() => setShown(e.event_id)}
                    >
                      Details
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {load.state === "ready" && (
        <Pager label="Pages of events" cursors={cursors} setCursors={setCursors} next={load.next} />
      )}
      {canPublish && <Publish onPublished={() => live.current?.refresh()} />}
      {shown && <EventDetail id={shown} onClose={() => setShown(null)} />}
    </section>
  );
}

type Detail = { state: "loading" } | { state: "error"; error: unknown } | { state: "ready"; value: StoredEvent };

const ENVELOPE: ReadonlyArray<readonly [keyof StoredEvent, string]> = [
  ["type", "Type"],
  ["id", "CloudEvents id"],
  ["source", "Source"],
  ["subject", "Subject"],
  ["time", "Time"],
  ["created_at", "Accepted"],
  ["severity", "Severity"],
  ["datacontenttype", "Content type"],
  ["specversion", "Spec version"],
  ["event_id", "Event id"],
];

function EventDetail({ id, onClose }: { id: string; onClose: () => void }) {
  const [detail, setDetail] = useState<Detail>({ state: "loading" });
  useEffect(() => {
    const abort = new AbortController();
    events
      .get(id, abort.signal)
      .then((value) => setDetail({ state: "ready", value }))
      .catch((error: unknown) => !abort.signal.aborted && setDetail({ state: "error", error }));
    return () => abort.abort();
  }, [id]);
  return (
    <Dialog id="event-detail" title="Event" onClose={onClose}>
      {detail.state === "loading" && (
        <p class="loading" role="status">
          Loading the event…
        </p>
      )}
      {detail.state === "error" && <ProblemNotice error={detail.error} />}
      {detail.state === "ready" && (
        <>
          <dl class="facts">
            {ENVELOPE.map(([name, label]) => {
              const value = detail.value[name];
              if (value === undefined || value === null) return null;
              return (
                <div key={name}>
                  <dt>{label}</dt>
                  <dd class="event-text">{String(value)}</dd>
                </div>
              );
            })}
          </dl>
          <h3>Data</h3>
          <pre class="changes-json">{JSON.stringify(detail.value.data ?? null, null, 2)}</pre>
        </>
      )}
      <div class="dialog-actions">
        <button type="button" onClick={onClose}>
          Close
        </button>
      </div>
    </Dialog>
  );
}

function Publish({ onPublished }: { onPublished: () => void }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [fields, setFields] = useState<Record<string, string>>({});
  const [status, setStatus] = useState("");
  const submit = async (event: SubmitEvent) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget as HTMLFormElement);
    const type = String(form.get("type") ?? "").trim();
    const data = parseData(String(form.get("data") ?? ""));
    setError(null);
    setStatus("");
    const found: Record<string, string> = {};
    if (!type) found.type = "Give the event's type, e.g. order.created.";
    if (!data.ok) found.data = data.message;
    setFields(found);
    if (!data.ok || !type) return;
    setBusy(true);
    try {
      const made = await events.publish({ type, data: data.value });
      setStatus(`Published ${made.type} as ${made.event_id}.`);
      onPublished();
    } catch (caught) {
      setError(caught);
      if (caught instanceof ApiError) setFields(caught.fieldErrors());
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <h2>Publish a test event</h2>
      <form class="publish" onSubmit={submit} noValidate aria-label="Publish a test event">
        <ProblemNotice error={error} />
        <Field id="publish-type" label="Type" hint="A registered type, e.g. order.created" error={fields.type}>
          {(aria) => <input {...aria} name="type" autoComplete="off" />}
        </Field>
        <Field id="publish-data" label="Data (JSON)" hint="Checked before it is sent; empty sends null" error={fields.data}>
          {(aria) => <textarea {...aria} name="data" rows={5} spellcheck={false} />}
        </Field>
        <div class="filter-actions">
          <button type="submit" disabled={busy}>
            Publish
          </button>
        </div>
      </form>
      <p role="status" class="status-line">
        {status}
      </p>
    </>
  );
}
