// The event-type catalog: /api/v1/event-types.

import { api, type ApiClient } from "../api/client";
import type { Catalog } from "../api/types";

export function eventTypesService(client: ApiClient = api) {
  return {
    catalog(signal?: AbortSignal): Promise<Catalog> {
      return client.request<Catalog>("GET", "/api/v1/event-types", { signal });
    },
  };
}

export const eventTypes = eventTypesService();
