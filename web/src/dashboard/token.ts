/**
 * The dashboard's token, from the page's `#token=` fragment.
 *
 * A link such as `http://gateway:8000/#token=<jwt>` hands the dashboard a token: the
 * fragment never leaves the browser (it is not part of the request line, nor of a
 * `Referer`), so no access log sees it. Once read it is removed from the address bar
 * (`history.replaceState`, no navigation), so it is not left on screen, in a
 * bookmark or in a link copied from there. Other fragment parameters are kept. The
 * token is kept in memory only: a reload asks for it again, rather than leaving a
 * bearer token in storage any script of the origin can read.
 */

/** Take `token` out of the location's fragment: its value, or null when there is none. */
export function takeTokenFromFragment(location: Location, history: History): string | null {
  const fragment = location.hash.startsWith('#') ? location.hash.slice(1) : location.hash;
  if (!fragment) return null;
  const params = new URLSearchParams(fragment);
  const token = params.get('token');
  if (token === null) return null;
  params.delete('token');
  const rest = params.toString();
  history.replaceState(history.state, '', `${location.pathname}${location.search}${rest ? `#${rest}` : ''}`);
  return token.trim() || null;
}
