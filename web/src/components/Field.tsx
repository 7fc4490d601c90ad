import type { ComponentChildren } from "preact";

interface FieldProps {
  id: string;
  label: string;
  error?: string;
  hint?: string;
  children: (aria: FieldAria) => ComponentChildren;
}

export interface FieldAria {
  id: string;
  "aria-invalid"?: "true";
  "aria-describedby"?: string;
}

/** A labelled control with its hint and, when the API refused it, its error (announced). */
export function Field({ id, label, error, hint, children }: FieldProps) {
  const described = [hint ? `${id}-hint` : "", error ? `${id}-error` : ""].filter(Boolean);
  return (
    <div class="field">
      <label for={id}>{label}</label>
      {hint && (
        <p class="hint" id={`${id}-hint`}>
          {hint}
        </p>
      )}
      {children({
        id,
        "aria-invalid": error ? "true" : undefined,
        "aria-describedby": described.length ? described.join(" ") : undefined,
      })}
      {error && (
        <p class="field-error" id={`${id}-error`} role="alert">
          {error}
        </p>
      )}
    </div>
  );
}
