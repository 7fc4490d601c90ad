import { PageTitle } from "../components/PageTitle";

export default function NotFound() {
  return (
    <section>
      <PageTitle>Page not found</PageTitle>
      <p>
        There is no page at this address. Go to the <a href="/overview">overview</a>.
      </p>
    </section>
  );
}
