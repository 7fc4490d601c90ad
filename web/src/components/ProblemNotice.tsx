import { ApiError } from "../api/client";

/** An error from the API: its title, and its detail when there is more to say. */
export function ProblemNotice({ error }: { error: unknown }) {
  if (!error) return null;
  const title = error instanceof ApiError ? error.title : "Something went wrong";
  const detail = error instanceof ApiError ? error.problem.detail : String(error);
  return (
    <div class="notice notice-error" role="alert">
      <strong>{title}</strong>
      {detail && detail !== title && <p>{detail}</p>}
    </div>
  );
}
