/** A tiny inline SVG line of recent prices; decorative, the table states the numbers. */
export function Sparkline({
  points,
  width = 96,
  height = 24,
}: {
  points: readonly number[];
  width?: number;
  height?: number;
}) {
  if (points.length < 2) {
    return <svg className="sparkline" width={width} height={height} aria-hidden="true" />;
  }
  const min = Math.min(...points);
  const max = Math.max(...points);
  const span = max - min || 1;
  const step = width / (points.length - 1);
  const path = points
    .map((p, i) => `${(i * step).toFixed(1)},${(height - 2 - ((p - min) / span) * (height - 4)).toFixed(1)}`)
    .join(' ');
  const first = points[0] ?? 0;
  const last = points[points.length - 1] ?? 0;
  const trend = last > first ? 'up' : last < first ? 'down' : 'flat';
  return (
    <svg
      className={`sparkline ${trend}`}
      width={width}
      height={height}
      viewBox={`0 0 ${width} ${height}`}
      aria-hidden="true"
      focusable="false"
    >
      <polyline points={path} fill="none" stroke="currentColor" strokeWidth="1.5" />
    </svg>
  );
}
