import { useState } from "preact/hooks";

/** A secret shown this once, with a copy button. Nothing keeps it after the dialog closes. */
export function SecretOnce({ id, label, value }: { id: string; label: string; value: string }) {
  const [copied, setCopied] = useState<"" | "done" | "failed">("");
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(value);
      setCopied("done");
    } catch {
      (document.getElementById(id) as HTMLInputElement | null)?.select();
      setCopied("failed");
    }
  };
  return (
    <div class="secret">
      <label for={id}>{label}</label>
      <div class="secret-row">
        <input id={id} class="mono" readOnly value={value} onFocus={(e) => e.currentTarget.select()} />
        <button type="button" onClick={copy}>
          Copy
        </button>
      </div>
      <p class="notice notice-warning">
        <strong>Copy it now: you will not see this again.</strong> Forecourt keeps only its hash.
      </p>
      <p role="status" class="hint">
        {copied === "done" ? "Copied to the clipboard." : copied === "failed" ? "Copying is not allowed here: the key is selected, copy it by hand." : ""}
      </p>
    </div>
  );
}
