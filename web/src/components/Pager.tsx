import type { Dispatch, StateUpdater } from "preact/hooks";

type Cursors = (string | null)[];

interface Props {
  /** What the pages are of, for the navigation's label ("Pages of keys"). */
  label: string;
  /** The cursors of the pages before this one and of this one (null: the first page). */
  cursors: Cursors;
  setCursors: Dispatch<StateUpdater<Cursors>>;
  /** The cursor of the page after this one, if there is one. */
  next: string | null | undefined;
}

/** Previous and next page of a cursor-paginated table; nothing when there is one page. */
export function Pager({ label, cursors, setCursors, next }: Props) {
  if (cursors.length <= 1 && !next) return null;
  return (
    <nav class="pager" aria-label={label}>
      <button
        type="button"
        class="secondary"
        disabled={cursors.length <= 1}
        onClick={() => setCursors((list) => list.slice(0, -1))}
      >
        Previous page
      </button>
      <button
        type="button"
        class="secondary"
        disabled={!next}
        onClick={() => next && setCursors((list) => [...list, next])}
      >
        Next page
      </button>
    </nav>
  );
}
