// How an endpoint's statistics read.

export function percent(rate: number | null): string {
  return rate === null ? "—" : `${(rate * 100).toFixed(1)} %`;
}

export function milliseconds(value: number | null): string {
  return value === null ? "—" : `${Math.round(value).toLocaleString("en")} ms`;
}

/** A datetime-local input's value (local time) in ISO 8601, or null when empty or invalid. */
export function localToIso(value: string): string | null {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}
