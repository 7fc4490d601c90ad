// Scopes are `resource:action` plus `admin`; the create dialog groups them by resource.

export interface ScopeGroup {
  resource: string;
  scopes: string[];
}

/** ``scopes`` grouped by resource, resources and actions sorted, ``admin`` first on its own. */
export function groupScopes(scopes: readonly string[]): ScopeGroup[] {
  const groups = new Map<string, string[]>();
  for (const scope of [...new Set(scopes)].sort()) {
    const resource = scope.includes(":") ? scope.slice(0, scope.indexOf(":")) : scope;
    groups.set(resource, [...(groups.get(resource) ?? []), scope]);
  }
  const names = [...groups.keys()].sort((a, b) =>
    a === "admin" ? -1 : b === "admin" ? 1 : a.localeCompare(b),
  );
  return names.map((resource) => ({ resource, scopes: groups.get(resource) ?? [] }));
}
