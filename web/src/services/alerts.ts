// Alerts: /api/v1/alerts.

import { api, type ApiClient } from "../api/client";
import type { Alert, Page } from "../api/types";

export const RECENT_ALERTS = 10;

export function alertsService(client: ApiClient = api) {
  const path = (id: string, action: string) => `/api/v1/alerts/${encodeURIComponent(id)}/${action}`;
  return {
    /** The newest alerts, whatever their state. */
    recent(signal?: AbortSignal): Promise<Page<Alert>> {
      return client.request<Page<Alert>>("GET", "/api/v1/alerts", {
        query: { limit: RECENT_ALERTS },
        signal,
      });
    },
    acknowledge(id: string): Promise<Alert> {
      return client.request<Alert>("POST", path(id, "acknowledge"));
    },
    resolve(id: string): Promise<Alert> {
      return client.request<Alert>("POST", path(id, "resolve"));
    },
  };
}

export const alerts = alertsService();
