// Events: /api/v1/events, and the stream channel of a type pattern.

import { api, type ApiClient } from "../api/client";
import type { EventPublish, Page, StoredEvent } from "../api/types";

export const EVENTS_PAGE_SIZE = 25;

/** The stream channel of a type pattern ("order.*"); every type when it is empty. */
export function eventsChannel(pattern: string): string {
  return `events:${pattern.trim() || "*"}`;
}

/** A JSON text as a value, or the reason it is not JSON. */
export function parseData(text: string): { ok: true; value: unknown } | { ok: false; message: string } {
  if (!text.trim()) return { ok: true, value: null };
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (caught) {
    return { ok: false, message: `This is not JSON: ${caught instanceof Error ? caught.message : String(caught)}` };
  }
}

export function eventsService(client: ApiClient = api) {
  return {
    list(pattern: string, cursor: string | null, signal?: AbortSignal): Promise<Page<StoredEvent>> {
      const type = pattern.trim();
      return client.request<Page<StoredEvent>>("GET", "/api/v1/events", {
        query: { limit: EVENTS_PAGE_SIZE, cursor, type: type && type !== "*" ? type : null },
        signal,
      });
    },
    get(eventId: string, signal?: AbortSignal): Promise<StoredEvent> {
      return client.request<StoredEvent>("GET", `/api/v1/events/${encodeURIComponent(eventId)}`, { signal });
    },
    publish(body: EventPublish): Promise<StoredEvent> {
      return client.request<StoredEvent>("POST", "/api/v1/events", { body });
    },
  };
}

export const events = eventsService();
