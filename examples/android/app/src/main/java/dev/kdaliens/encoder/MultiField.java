package dev.kdaliens.encoder;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * Several tokens per row (genres, tags): {@code max_len} ids, padded with 0. A string value
 * is split on the separator (parts that are only whitespace are dropped); a list is used as
 * it is; NaN and null are empty; any other value is one token. Tokens past {@code max_len}
 * are dropped, in order. Each token encodes like a categorical value (a null element: 1).
 */
public final class MultiField extends Field {
  private final int maxLen;
  private final String separator;
  private final Lookup lookup;

  public MultiField(String name, int maxLen, List<String> vocab, Long hashBuckets, String separator) {
    this(name, maxLen, vocab, hashBuckets, separator, "field '" + name + "'");
  }

  MultiField(String name, int maxLen, List<String> vocab, Long hashBuckets, String separator, String path) {
    super(name);
    if (maxLen < 1) {
      throw new EncoderException(path + ": max_len must be >= 1");
    }
    if (separator.isEmpty()) {
      throw new EncoderException(path + ": separator must not be empty");
    }
    this.maxLen = maxLen;
    this.separator = separator;
    this.lookup = Lookup.create(path, vocab, hashBuckets);
  }

  @Override
  public String kind() {
    return "multi";
  }

  @Override
  public int cardinality() {
    return lookup.cardinality();
  }

  @Override
  public int width() {
    return maxLen;
  }

  public String separator() {
    return separator;
  }

  public List<String> vocab() {
    return lookup.vocab();
  }

  public Long hashBuckets() {
    return lookup.hashBuckets();
  }

  /** The tokens of a raw value, before the {@code max_len} cut. */
  public List<Object> split(Object value) {
    if (value == null) {
      return Collections.emptyList();
    }
    if (value instanceof String) {
      String s = (String) value;
      List<Object> out = new ArrayList<>();
      int start = 0;
      while (true) { // Python's str.split(sep): literal, empty parts kept (then dropped below)
        int at = s.indexOf(separator, start);
        String part = at < 0 ? s.substring(start) : s.substring(start, at);
        if (!Tokens.strip(part).isEmpty()) {
          out.add(part);
        }
        if (at < 0) {
          return out;
        }
        start = at + separator.length();
      }
    }
    if (value instanceof List) {
      return new ArrayList<>((List<?>) value);
    }
    if (value instanceof Double && Double.isNaN((Double) value)) {
      return Collections.emptyList();
    }
    return Collections.singletonList(value);
  }

  @Override
  public void encodeInto(Object value, long[] out, int offset) {
    List<Object> tokens = split(value);
    int n = Math.min(tokens.size(), maxLen);
    for (int j = 0; j < maxLen; j++) {
      out[offset + j] = j < n ? lookup.encode(tokens.get(j)) : Tokens.PAD_ID;
    }
  }
}
