package dev.kdaliens.encoder;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;

/**
 * Encoded attribute rows: one row-major {@code long[]} per field, of {@code rows() * width(name)}
 * ids, in the spec's field order.
 */
public final class EncodedRows {
  private final int rows;
  private final Map<String, long[]> arrays;
  private final Map<String, Integer> widths;

  EncodedRows(int rows, LinkedHashMap<String, long[]> arrays, LinkedHashMap<String, Integer> widths) {
    this.rows = rows;
    this.arrays = Collections.unmodifiableMap(arrays);
    this.widths = Collections.unmodifiableMap(widths);
  }

  public int rows() {
    return rows;
  }

  public Set<String> names() {
    return arrays.keySet();
  }

  /** The ids of field {@code name}: {@code rows() * width(name)} values, row-major. */
  public long[] get(String name) {
    long[] a = arrays.get(name);
    if (a == null) {
      throw new EncoderException("no encoded field named '" + name + "'");
    }
    return a;
  }

  /** Ids per row of field {@code name}. */
  public int width(String name) {
    Integer w = widths.get(name);
    if (w == null) {
      throw new EncoderException("no encoded field named '" + name + "'");
    }
    return w;
  }
}
