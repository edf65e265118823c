// Loaded with `node --import` when a test asks for a provider whose clock is off by CLOCK_SKEW_MS
// milliseconds (a host without NTP, or drifting): every Date the provider makes, and Date.now(), shift.
const skew = Number(process.env.CLOCK_SKEW_MS || 0);
const RealDate = Date;
class SkewedDate extends RealDate {
  constructor(...args) {
    if (args.length === 0) super(RealDate.now() + skew);
    else super(...args);
  }
  static now() {
    return RealDate.now() + skew;
  }
}
globalThis.Date = SkewedDate;
