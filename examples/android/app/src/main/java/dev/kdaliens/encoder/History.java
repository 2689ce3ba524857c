package dev.kdaliens.encoder;

import java.util.Collections;
import java.util.Map;

/**
 * One user's encoded history, of the spec's history length {@code L}: {@code hist_<field>}
 * arrays ({@code L * width} ids, row-major), {@code hist_event} and {@code hist_time_gap}
 * ({@code L} ids) and the mask. Padding slots come first (ids 0, mask false).
 */
public final class History {
  private final int length;
  private final Map<String, long[]> arrays;
  private final Map<String, Integer> widths;
  private final boolean[] mask;

  History(int length, Map<String, long[]> arrays, Map<String, Integer> widths, boolean[] mask) {
    this.length = length;
    this.arrays = Collections.unmodifiableMap(arrays);
    this.widths = Collections.unmodifiableMap(widths);
    this.mask = mask;
  }

  /** History slots (short_len + long_len). */
  public int length() {
    return length;
  }

  /** {@code hist_<field>}, {@code hist_event} or {@code hist_time_gap}. */
  public long[] get(String name) {
    long[] a = arrays.get(name);
    if (a == null) {
      throw new EncoderException("no history array named '" + name + "'");
    }
    return a;
  }

  public boolean has(String name) {
    return arrays.containsKey(name);
  }

  /** Ids per slot of array {@code name} (1, or a multi field's max_len). */
  public int width(String name) {
    Integer w = widths.get(name);
    if (w == null) {
      throw new EncoderException("no history array named '" + name + "'");
    }
    return w;
  }

  /** True for the slots that hold an event. */
  public boolean[] mask() {
    return mask.clone();
  }

  boolean[] maskRef() {
    return mask;
  }

  /** Number of real events in the history. */
  public int count() {
    int n = 0;
    for (boolean m : mask) {
      if (m) {
        n++;
      }
    }
    return n;
  }
}
