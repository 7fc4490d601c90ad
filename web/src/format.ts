// How dates and numbers read in the dashboard.

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export function when(iso: string | null, never = "Never"): string {
  if (!iso) return never;
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : dateTime.format(date);
}

export function count(value: number | undefined): string {
  return (value ?? 0).toLocaleString();
}

/** A date input's value (YYYY-MM-DD) as the end of that day, local time, in ISO 8601. */
export function endOfDay(value: string): string | null {
  if (!value) return null;
  const date = new Date(`${value}T23:59:59`);
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

/** A tier's limits as a phrase: "60 a minute, 1,000 an hour". */
export function limits(windows: Record<string, number>): string {
  const article = (name: string) => (/^[aeiou]/.test(name) || name === "hour" ? "an" : "a");
  return Object.entries(windows)
    .map(([name, value]) => `${value.toLocaleString("en")} ${article(name)} ${name}`)
    .join(", ");
}
