package dev.kdaliens.encoder;

import java.util.Arrays;

/**
 * The long/short-term history sampler of KD-ALIENS ({@code kdaliens/sdk/history.py}).
 *
 * <p>Of {@code n} time-ordered past events (0 = oldest), the last {@code shortLen} are always
 * kept. Each older position {@code j} gets the key {@code splitmix64(splitmix64(seed) + j)}
 * (unsigned 64-bit, wrapping), and the {@code longLen} positions with the smallest keys are
 * kept (ties break by position). The result is chronological; {@link #sample} left-pads it to
 * the history length.
 */
public final class HistorySampler {
  private final HistorySpec spec;

  public HistorySampler(HistorySpec spec) {
    this.spec = spec;
  }

  public HistorySpec spec() {
    return spec;
  }

  /** The splitmix64 finalizer (wrapping 64-bit arithmetic). */
  public static long splitmix64(long x) {
    long z = x + 0x9E3779B97F4A7C15L;
    z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
    z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
    return z ^ (z >>> 31);
  }

  /** Chosen positions (oldest first) among {@code nPast} past events, with the spec's seed. */
  public int[] positions(int nPast) {
    return positions(nPast, spec.seed);
  }

  /** Chosen positions (oldest first) among {@code nPast} past events, with another seed. */
  public int[] positions(int nPast, long seed) {
    if (nPast < 0) {
      throw new EncoderException("n_past must be >= 0, got " + nPast);
    }
    int nShort = Math.min(nPast, spec.shortLen);
    int nOld = nPast - nShort;
    int[] longPos;
    if (nOld <= spec.longLen) {
      longPos = new int[nOld];
      for (int i = 0; i < nOld; i++) {
        longPos[i] = i;
      }
    } else {
      long base = splitmix64(seed);
      long[] keys = new long[nOld];
      Integer[] order = new Integer[nOld];
      for (int j = 0; j < nOld; j++) {
        keys[j] = splitmix64(base + j);
        order[j] = j;
      }
      Arrays.sort(order, (a, b) -> {
        int c = Long.compareUnsigned(keys[a], keys[b]);
        return c != 0 ? c : Integer.compare(a, b);
      });
      longPos = new int[spec.longLen];
      for (int i = 0; i < spec.longLen; i++) {
        longPos[i] = order[i];
      }
      Arrays.sort(longPos);
    }
    int[] out = new int[longPos.length + nShort];
    System.arraycopy(longPos, 0, out, 0, longPos.length);
    for (int i = 0; i < nShort; i++) {
      out[longPos.length + i] = nOld + i;
    }
    return out;
  }

  /** Indices into the past events and a mask, of the history length; padding first (-1, false). */
  public Sample sample(int nPast, long seed) {
    int length = spec.length();
    int[] pos = positions(nPast, seed);
    int[] idx = new int[length];
    boolean[] mask = new boolean[length];
    Arrays.fill(idx, -1);
    int off = length - pos.length;
    for (int i = 0; i < pos.length; i++) {
      idx[off + i] = pos[i];
      mask[off + i] = true;
    }
    return new Sample(idx, mask);
  }

  /** A sample: {@code index[l]} is a past event's position, or -1 where {@code mask[l]} is false. */
  public static final class Sample {
    public final int[] index;
    public final boolean[] mask;

    Sample(int[] index, boolean[] mask) {
      this.index = index;
      this.mask = mask;
    }
  }
}
