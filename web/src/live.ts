// A live view's refresh: it follows the stream, redraws at most once per interval, reconnects
// with backoff after errors, and stops when the page is left.

export const REFRESH_MIN_INTERVAL_MS = 1000;
export const ERROR_BACKOFF_MS = [2000, 5000, 15000, 30000] as const;

export function backoff(failures: number): number {
  const steps = ERROR_BACKOFF_MS;
  return steps[Math.min(Math.max(failures, 1), steps.length) - 1] ?? steps[steps.length - 1];
}

export interface Live {
  stop(): void;
  /** Refresh soon (after a change made from the page itself). */
  refresh(): void;
}

export interface LiveOptions {
  url: string | null;
  refresh: (signal: AbortSignal) => Promise<void>;
  onState: (state: "live" | "offline") => void;
}

/** Refreshes once now, then after each stream message (coalesced); ``url`` null: no stream. */
export function follow({ url, refresh, onState }: LiveOptions): Live {
  const abort = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let last = 0;
  let failures = 0;
  let source: EventSource | null = null;
  let running = false;
  let again = false;

  const run = async () => {
    if (abort.signal.aborted) return;
    if (running) {
      again = true;
      return;
    }
    running = true;
    last = Date.now();
    try {
      await refresh(abort.signal);
    } catch {
      // The view shows its own error; the next message tries again.
    } finally {
      running = false;
      if (again) {
        again = false;
        schedule();
      }
    }
  };

  const schedule = () => {
    if (timer !== undefined || abort.signal.aborted) return;
    const wait = Math.max(0, last + REFRESH_MIN_INTERVAL_MS - Date.now());
    timer = setTimeout(() => {
      timer = undefined;
      void run();
    }, wait);
  };

  const connect = () => {
    if (!url || abort.signal.aborted) return;
    source = new EventSource(url);
    const changed = () => schedule();
    for (const type of ["event", "delivery_update", "execution_complete", "alert", "resync"]) {
      source.addEventListener(type, changed);
    }
    source.addEventListener("subscribed", () => {
      failures = 0;
      onState("live");
    });
    source.onerror = () => {
      // EventSource retries by itself while the server answers; after a refusal it stops.
      if (source?.readyState === EventSource.CLOSED) {
        source = null;
        failures += 1;
        onState("offline");
        setTimeout(connect, backoff(failures));
      } else {
        onState("offline");
      }
    };
  };

  void run();
  connect();
  return {
    refresh: () => schedule(),
    stop() {
      abort.abort();
      if (timer !== undefined) clearTimeout(timer);
      source?.close();
      source = null;
    },
  };
}
