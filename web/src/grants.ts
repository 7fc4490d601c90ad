// What the signed-in principal may do, read from its scopes as the API reads them: `admin`
// grants every tenant scope, and `resource:write` grants `resource:read`.

export function holds(scopes: readonly string[], scope: string): boolean {
  if (scopes.includes("admin") || scopes.includes(scope)) return true;
  return scope.endsWith(":read") && scopes.includes(scope.replace(/:read$/, ":write"));
}
