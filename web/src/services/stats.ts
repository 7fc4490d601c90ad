// The tenant's summary (/api/v1/stats/summary), and the stream that says when it changed.

import { api, type ApiClient } from "../api/client";
import type { Summary } from "../api/types";

/** The stream channels that move the summary, with the scope each needs. */
export const SUMMARY_CHANNELS: ReadonlyArray<readonly [channel: string, scope: string]> = [
  ["events", "events:read"],
  ["deliveries", "deliveries:read"],
  ["executions", "plugins:read"],
  ["alerts", "alerts:read"],
];

/** The channels the caller may join (``admin`` holds every scope of its tenant). */
export function summaryChannels(scopes: readonly string[]): string[] {
  const held = new Set(scopes);
  const admin = held.has("admin");
  return SUMMARY_CHANNELS.filter(
    ([, scope]) => admin || held.has(scope) || held.has(scope.replace(/:read$/, ":write")),
  ).map(([channel]) => channel);
}

/** Succeeded out of finished (succeeded or failed) deliveries, in percent to one decimal;
 * null before any finished. Pending and retrying deliveries have no outcome yet. */
export function deliverySuccessRate(deliveries: Record<string, number>): number | null {
  const ok = deliveries.succeeded ?? 0;
  const failed = deliveries.failed ?? 0;
  return ok + failed ? Math.round((ok / (ok + failed)) * 1000) / 10 : null;
}

export function streamUrl(channels: readonly string[]): string {
  return `/api/v1/stream?channels=${encodeURIComponent(channels.join(","))}`;
}

export function statsService(client: ApiClient = api) {
  return {
    summary(signal?: AbortSignal): Promise<Summary> {
      return client.request<Summary>("GET", "/api/v1/stats/summary", { signal });
    },
  };
}

export const stats = statsService();
