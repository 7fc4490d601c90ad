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

export interface RetryPolicy {
  kind: "exponential" | "linear" | "none";
  max_attempts: number;
  interval_s: number;
}

/** A webhook endpoint; without webhooks:secrets, header values and URL credentials read ***. */
export interface Endpoint {
  id: string;
  url: string;
  description: string;
  event_types: string[];
  headers: Record<string, string>;
  timeout_s: number;
  retry_policy: RetryPolicy;
  rate_limit_per_s: number | null;
  metadata: Record<string, unknown>;
  enabled: boolean;
  disabled_reason: string | null;
  disabled_at: string | null;
  previous_secret_expires_at: string | null;
  created_at: string;
  updated_at: string;
}

/** An endpoint as created: the generated secret, this once (null when withheld or given). */
export interface EndpointCreated extends Endpoint {
  secret: string | null;
}

export interface EndpointWrite {
  url: string;
  description: string;
  event_types: string[];
  headers: Record<string, string>;
  retry_policy: RetryPolicy;
  rate_limit_per_s: number | null;
  secret?: string;
}

export interface SecretOut {
  secret: string | null;
  previous_secret_expires_at: string | null;
}

export interface Attempt {
  id: string;
  attempt_no: number;
  started_at: string;
  duration_ms: number;
  status_code: number | null;
  response_excerpt: string | null;
  error_class: string | null;
  error_message: string | null;
}

export interface Delivery {
  id: string;
  endpoint_id: string;
  event_id: string;
  event_type: string;
  status: string;
  attempts: number;
  next_attempt_at: string | null;
  last_status_code: number | null;
  last_error: string | null;
  created_at: string;
  updated_at: string;
  finished_at: string | null;
}

export interface DeliveryDetail extends Delivery {
  attempt_log: Attempt[];
}

export interface WindowStats {
  attempts: number;
  succeeded: number;
  failed: number;
  success_rate: number | null;
  p50_ms: number | null;
  p95_ms: number | null;
  last_success_at: string | null;
  last_failure_at: string | null;
}

/** One hour of attempts: those that started in [start, start + 1 h). */
export interface HourAttempts {
  start: string;
  succeeded: number;
  failed: number;
}

export interface EndpointStats {
  endpoint_id: string;
  windows: Record<string, WindowStats>;
  pending: number;
  /** The last 24 hours, oldest first, every hour listed. */
  hourly: HourAttempts[];
}

export interface EventType {
  name: string;
  category: string;
  description: string;
  builtin: boolean;
  archived_at: string | null;
}

export interface Catalog {
  categories: { name: string; types: EventType[] }[];
}

/** An entry of the audit log (GET /api/v1/audit-log). */
export interface AuditEntry {
  id: string;
  actor_type: string;
  actor_id: string | null;
  action: string;
  target_type: string;
  target_id: string | null;
  before: Record<string, unknown> | null;
  after: Record<string, unknown> | null;
  ip: string | null;
  request_id: string | null;
  created_at: string;
}

/** A stored event: its CloudEvents envelope and Forecourt's own fields (GET /api/v1/events). */
export interface StoredEvent {
  specversion: string;
  id: string;
  source: string;
  type: string;
  time: string;
  datacontenttype: string;
  subject?: string | null;
  data?: unknown;
  tenant: string;
  severity: string;
  event_id: string;
  created_at: string;
}

export interface EventPublish {
  type: string;
  data: unknown;
}
