/**
 * Money is integer micro-units of one currency (1 USD = 1,000,000 µ). Amounts are plain numbers:
 * 2^53 µ is nine billion dollars, so every sum Hangar keeps stays exact; products go through BigInt.
 */
export const MICRO_PER_UNIT = 1_000_000;
const MS_PER_HOUR = 3_600_000n;

/** A provider's decimal price (dollars per hour) as whole micro-units, rounded to the nearest. */
export function toMicro(amount: number): number {
  if (!Number.isFinite(amount)) throw new RangeError(`not an amount: ${amount}`);
  return Math.round(amount * MICRO_PER_UNIT);
}

export function fromMicro(micro: number): number {
  return micro / MICRO_PER_UNIT;
}

/** "12.345678" — exact, for messages and CSV; never a float's rounding. */
export function formatMicro(micro: number): string {
  const sign = micro < 0 ? "-" : "";
  const abs = Math.abs(micro);
  return `${sign}${Math.floor(abs / MICRO_PER_UNIT)}.${String(abs % MICRO_PER_UNIT).padStart(6, "0")}`;
}

/** Divides, rounding half away from zero; the one rounding rule of every charge. */
function divideRounded(numerator: bigint, denominator: bigint): bigint {
  const quotient = numerator / denominator;
  const remainder = numerator % denominator;
  return remainder * 2n >= denominator ? quotient + 1n : quotient;
}

/**
 * The cost of `ms` milliseconds of a machine priced `pricePerHourMicro`, of which the work holds
 * `1/share` (jobs packed `share` to an instance split its price evenly while they run).
 */
export function costOfTime(pricePerHourMicro: number, ms: number, share = 1): number {
  if (pricePerHourMicro <= 0 || ms <= 0) return 0;
  const micro = divideRounded(
    BigInt(pricePerHourMicro) * BigInt(Math.round(ms)),
    MS_PER_HOUR * BigInt(Math.max(1, share)),
  );
  return Number(micro);
}

/** A provider's price plus the deployment's markup (in percent), in micro-units per hour. */
export function withMarkup(pricePerHourMicro: number, markupPercent: number): number {
  if (markupPercent === 0) return pricePerHourMicro;
  return Number(
    divideRounded(BigInt(pricePerHourMicro) * BigInt(Math.round(markupPercent * 100 + 10_000)), 10_000n),
  );
}
