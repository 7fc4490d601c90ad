// Sign-in sessions: /api/v1/auth. The session lives in an HttpOnly cookie; its CSRF token in
// a readable cookie the API client sends back on writes.

import { api, type ApiClient } from "../api/client";
import type { Me, SessionOut, User } from "../api/types";

export interface Signed {
  me: Me;
  user: User | null;
}

export function authService(client: ApiClient = api) {
  return {
    /** Who the session belongs to; null when there is no valid session. */
    async current(): Promise<Signed | null> {
      try {
        const me = await client.request<Me>("GET", "/api/v1/auth/me", {
          quietUnauthenticated: true,
        });
        return { me, user: await this.user(me) };
      } catch (error) {
        if ((error as { status?: number }).status === 401) return null;
        throw error;
      }
    },

    async user(me: Me): Promise<User | null> {
      if (me.actor_type !== "user" || !me.actor_id || !me.scopes.includes("users:read")) {
        return null;
      }
      return client.request<User>("GET", `/api/v1/users/${encodeURIComponent(me.actor_id)}`);
    },

    async signIn(email: string, password: string): Promise<Signed> {
      const session = await client.request<SessionOut>("POST", "/api/v1/auth/login", {
        body: { email, password },
        quietUnauthenticated: true,
      });
      const me = await client.request<Me>("GET", "/api/v1/auth/me");
      return { me, user: session.user };
    },

    async signOut(): Promise<void> {
      await client.request<void>("POST", "/api/v1/auth/logout", { quietUnauthenticated: true });
    },
  };
}

export const auth = authService();
