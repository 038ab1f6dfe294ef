/** Number and time formatting, shared by the panels; formatters are built once. */
const money = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD' });
const price = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const signed = new Intl.NumberFormat('en-US', {
  minimumFractionDigits: 2,
  maximumFractionDigits: 2,
  signDisplay: 'exceptZero',
});
const compact = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });
const percent = new Intl.NumberFormat('en-US', { style: 'percent', maximumFractionDigits: 0 });
const time = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

export const formatMoney = (value: number): string => money.format(value);
export const formatPrice = (value: number): string => price.format(value);
export const formatChange = (value: number): string => signed.format(value);
export const formatChangePct = (value: number): string => `${signed.format(value)}%`;
export const formatVolume = (value: number): string => compact.format(value);
export const formatConfidence = (value: number): string => percent.format(value);
export function formatTime(iso: string): string {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : time.format(date);
}

/** `up`, `down` or `flat`: the class, and the arrow that says it without colour. */
export function direction(value: number): 'up' | 'down' | 'flat' {
  return value > 0 ? 'up' : value < 0 ? 'down' : 'flat';
}
export const ARROW = { up: '▲', down: '▼', flat: '–' } as const;
