// Webhook endpoints and their deliveries: /api/v1/webhooks and /api/v1/deliveries.

import { api, type ApiClient } from "../api/client";
import type {
  Attempt,
  Delivery,
  DeliveryDetail,
  Endpoint,
  EndpointCreated,
  EndpointStats,
  EndpointWrite,
  Page,
  SecretOut,
} from "../api/types";

export const WEBHOOKS_PAGE_SIZE = 20;
export const DELIVERIES_PAGE_SIZE = 25;

export interface DeliveryFilter {
  status?: string;
  event_type?: string;
  since?: string | null;
}

export function webhooksService(client: ApiClient = api) {
  const path = (id: string, action = "") =>
    `/api/v1/webhooks/${encodeURIComponent(id)}${action ? `/${action}` : ""}`;
  return {
    list(cursor: string | null, signal?: AbortSignal): Promise<Page<Endpoint>> {
      return client.request<Page<Endpoint>>("GET", "/api/v1/webhooks", {
        query: { limit: WEBHOOKS_PAGE_SIZE, cursor },
        signal,
      });
    },
    get(id: string, signal?: AbortSignal): Promise<Endpoint> {
      return client.request<Endpoint>("GET", path(id), { signal });
    },
    create(body: EndpointWrite): Promise<EndpointCreated> {
      return client.request<EndpointCreated>("POST", "/api/v1/webhooks", { body });
    },
    update(id: string, body: Partial<EndpointWrite>): Promise<Endpoint> {
      return client.request<Endpoint>("PATCH", path(id), { body });
    },
    remove(id: string): Promise<void> {
      return client.request<void>("DELETE", path(id));
    },
    setEnabled(id: string, enabled: boolean): Promise<Endpoint> {
      return client.request<Endpoint>("POST", path(id, enabled ? "enable" : "disable"));
    },
    test(id: string): Promise<Attempt> {
      return client.request<Attempt>("POST", path(id, "test"));
    },
    revealSecret(id: string): Promise<SecretOut> {
      return client.request<SecretOut>("GET", path(id, "secret"));
    },
    rotateSecret(id: string): Promise<SecretOut> {
      return client.request<SecretOut>("POST", path(id, "secret/rotate"), { body: {} });
    },
    stats(id: string, signal?: AbortSignal): Promise<EndpointStats> {
      return client.request<EndpointStats>("GET", path(id, "stats"), { signal });
    },
    deliveries(
      id: string,
      filter: DeliveryFilter,
      cursor: string | null,
      signal?: AbortSignal,
    ): Promise<Page<Delivery>> {
      return client.request<Page<Delivery>>("GET", path(id, "deliveries"), {
        query: { limit: DELIVERIES_PAGE_SIZE, cursor, ...filter },
        signal,
      });
    },
    delivery(id: string, signal?: AbortSignal): Promise<DeliveryDetail> {
      return client.request<DeliveryDetail>("GET", `/api/v1/deliveries/${encodeURIComponent(id)}`, {
        signal,
      });
    },
    retry(deliveryId: string): Promise<Delivery> {
      return client.request<Delivery>("POST", `/api/v1/deliveries/${encodeURIComponent(deliveryId)}/retry`);
    },
    recover(id: string, since: string): Promise<{ requeued: number }> {
      return client.request<{ requeued: number }>("POST", path(id, "recover"), { query: { since } });
    },
  };
}

export const webhooks = webhooksService();
