import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import { Dialog } from "./Dialog";
import { ProblemNotice } from "./ProblemNotice";

interface ConfirmProps {
  id: string;
  title: string;
  action: string;
  danger?: boolean;
  run: () => Promise<unknown>;
  onClose: () => void;
  onDone: (result: unknown) => void;
  children: ComponentChildren;
}

/** A question before an action that cannot be taken back; the API's refusal shown in it. */
export function Confirm({ id, title, action, danger, run, onClose, onDone, children }: ConfirmProps) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const confirm = async () => {
    setBusy(true);
    setError(null);
    try {
      onDone(await run());
    } catch (caught) {
      setError(caught);
      setBusy(false);
    }
  };
  return (
    <Dialog id={id} title={title} onClose={onClose}>
      {children}
      <ProblemNotice error={error} />
      <div class="dialog-actions">
        <button type="button" class="secondary" onClick={onClose}>
          Cancel
        </button>
        <button type="button" class={danger ? "danger" : undefined} disabled={busy} onClick={confirm}>
          {action}
        </button>
      </div>
    </Dialog>
  );
}
