/**
 * Run `callback` before the next paint; returns a cancel function.
 *
 * Falls back to a 16 ms timer where there is no `requestAnimationFrame` (tests,
 * workers). A hidden tab gets no frames: updates wait, and since callers keep only
 * the latest value per key, what waits stays bounded.
 */
export function scheduleFrame(callback: () => void): () => void {
  if (typeof requestAnimationFrame === 'function') {
    const handle = requestAnimationFrame(() => callback());
    return () => cancelAnimationFrame(handle);
  }
  const handle = setTimeout(callback, 16);
  return () => clearTimeout(handle);
}
