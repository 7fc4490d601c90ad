// The audit log: /api/v1/audit-log (read-only).

import { api, type ApiClient } from "../api/client";
import type { AuditEntry, Page } from "../api/types";

export const AUDIT_PAGE_SIZE = 25;

/** The log's filters, named as the route's query parameters. */
export interface AuditFilter {
  actor_id?: string;
  action?: string;
  target_type?: string;
  target_id?: string;
  since?: string | null;
  until?: string | null;
}

export function auditService(client: ApiClient = api) {
  return {
    list(filter: AuditFilter, cursor: string | null, signal?: AbortSignal): Promise<Page<AuditEntry>> {
      return client.request<Page<AuditEntry>>("GET", "/api/v1/audit-log", {
        query: {
          limit: AUDIT_PAGE_SIZE,
          cursor,
          actor_id: filter.actor_id || null,
          action: filter.action || null,
          target_type: filter.target_type || null,
          target_id: filter.target_id || null,
          since: filter.since || null,
          until: filter.until || null,
        },
        signal,
      });
    },
  };
}

export const audit = auditService();
