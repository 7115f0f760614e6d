/**
 * The ticks of a 1:1 chat, in order: a message shows `✓ sent #N`, then
 * `✓✓ delivered #N`, then `✓✓ read up to #N`, never a later state before an
 * earlier one. Receipts can overtake the send's own resolution (the server may
 * deliver, and the peer read, before its group commit answers `sent`; an
 * encrypted send resolves only after its resends), so what arrives while a
 * send is unresolved is held until that send says which seq it got.
 */
export class Ticks {
  /** Sends not yet resolved: a receipt meanwhile may be for one of them. */
  private inflight = 0;
  /** Seqs this chat sent and showed as sent. */
  private ours = new Set<number>();
  private delivered = new Set<number>();
  /** Delivery receipts held until the send of their seq resolves. */
  private early = new Set<number>();
  private readShown = 0;
  /** The highest read receipt held while sends are unresolved. */
  private heldRead = 0;

  constructor(private readonly show: (line: string) => void) {}

  /** A send started. */
  sending(): void {
    this.inflight++;
  }

  /** A send failed: it has no seq, and nothing waits for it. */
  failed(): void {
    this.inflight--;
    this.release();
  }

  /** A send resolved with `seq`. */
  sent(seq: number): void {
    this.inflight--;
    this.ours.add(seq);
    this.show(`  ✓ sent #${seq}`);
    if (this.early.delete(seq)) this.showDelivered(seq);
    this.release();
  }

  /** A delivery receipt for `seq` (of this conversation). */
  delivery(seq: number): void {
    if (this.ours.has(seq)) this.showDelivered(seq);
    else if (this.inflight > 0) {
      if (this.early.size > 1000) this.early.clear(); // receipts of other devices' sends, never claimed
      this.early.add(seq);
    }
  }

  /** A read receipt: the peer read everything up to `seq`. */
  read(seq: number): void {
    if (seq <= Math.max(this.readShown, this.heldRead)) return;
    if (this.inflight > 0) this.heldRead = seq;
    else this.showRead(seq);
  }

  private showDelivered(seq: number): void {
    if (this.delivered.has(seq) || seq <= this.readShown) return; // read says more than delivered
    this.delivered.add(seq);
    this.show(`  ✓✓ delivered #${seq}`);
  }

  private showRead(seq: number): void {
    this.readShown = seq;
    this.show(`  ✓✓ read up to #${seq}`);
  }

  /** Once no send is unresolved, the held read receipt can no longer come before a `sent`. */
  private release(): void {
    if (this.inflight > 0 || this.heldRead <= this.readShown) return;
    const seq = this.heldRead;
    this.heldRead = 0;
    this.showRead(seq);
  }
}
