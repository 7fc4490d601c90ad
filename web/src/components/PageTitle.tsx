import { useEffect, useRef } from "preact/hooks";

/** The page's heading; it takes the focus when the page opens, so screen readers announce
 * the new page and keyboard users start from its top. */
export function PageTitle({ children }: { children: string }) {
  const ref = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    document.title = `${children} · Forecourt`;
    ref.current?.focus();
  }, [children]);
  return (
    <h1 ref={ref} tabIndex={-1}>
      {children}
    </h1>
  );
}
