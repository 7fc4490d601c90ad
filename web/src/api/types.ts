// Bodies of the REST API the dashboard reads, as /openapi.json describes them.

export interface FieldError {
  field: string;
  message: string;
}

/** An RFC 9457 problem document, as every error of the API is sent. */
export interface Problem {
  type?: string;
  title: string;
  status: number;
  detail?: string;
  field?: string;
  errors?: FieldError[];
  [extra: string]: unknown;
}

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

export interface Me {
  actor_type: "user" | "key" | "system";
  actor_id: string | null;
  tenant_id: string;
  scopes: string[];
}

export interface User {
  id: string;
  email: string;
  name: string;
  role: string;
  created_at: string;
  last_login_at: string | null;
  disabled_at: string | null;
}

export interface SessionOut {
  user: User;
  csrf_token: string;
  expires_at: string;
}

export type KeyStatus = "active" | "expired" | "revoked";

export interface ApiKey {
  id: string;
  name: string;
  description: string;
  prefix: string;
  environment: string;
  scopes: string[];
  tier: string;
  rate_limits: Record<string, number>;
  status: KeyStatus;
  expires_at: string | null;
  previous_expires_at: string | null;
  created_by: string | null;
  created_at: string;
  updated_at: string;
  last_used_at: string | null;
  revoked_at: string | null;
}

/** A key as created or rotated: the full secret, this once. */
export interface ApiKeyCreated extends ApiKey {
  key: string;
}

export interface KeyCreate {
  name: string;
  description?: string;
  scopes: string[];
  tier?: string;
  expires_at?: string | null;
}

export interface Tiers {
  default: string;
  items: { name: string; limits: Record<string, number> }[];
}

export interface Summary {
  generated_at: string;
  plugins: { installed: number; enabled: number };
  instances: { total: number; enabled: number };
  metrics: { series: number; points: number };
  executions_last_hour: Record<string, number>;
  events_last_hour: number;
  deliveries: Record<string, number>;
  open_alerts: Record<string, number>;
}

export interface UsageTotals {
  requests: number;
  status_2xx: number;
  status_3xx: number;
  status_4xx: number;
  status_5xx: number;
  rate_limited: number;
}

export interface UsagePoint extends UsageTotals {
  start: string;
}

/** A key's requests by status class; each series lists only the periods with requests. */
export interface KeyUsage {
  key_id: string;
  last_used_at: string | null;
  minute: UsagePoint[];
  hour: UsagePoint[];
  day: UsagePoint[];
  totals_30d: UsageTotals;
}

export type AlertState = "open" | "acknowledged" | "resolved";

export interface Alert {
  id: string;
  type: string;
  severity: "critical" | "high" | "medium" | "low";
  state: AlertState;
  message: string;
  source: string;
  labels: Record<string, unknown>;
  count: number;
  first_seen_at: string;
  last_seen_at: string;
  acknowledged_at: string | null;
  resolved_at: string | null;
}
