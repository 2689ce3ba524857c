package dev.kdaliens.encoder;

import java.util.List;

/**
 * One categorical value per row (an id, a gender, an occupation). Token {@code vocab[i]}
 * encodes to {@code i + 2}; with {@code hash_buckets} instead, a token encodes to {@code
 * 2 + stableHash(token) % hash_buckets}. Missing and unknown values encode to 1.
 */
public final class CategoricalField extends Field {
  private final Lookup lookup;

  /**
   * @param vocab known tokens, or null when hashing
   * @param hashBuckets bucket count, or null when a vocabulary is given
   */
  public CategoricalField(String name, List<String> vocab, Long hashBuckets) {
    this(name, vocab, hashBuckets, "field '" + name + "'");
  }

  CategoricalField(String name, List<String> vocab, Long hashBuckets, String path) {
    super(name);
    this.lookup = Lookup.create(path, vocab, hashBuckets);
  }

  @Override
  public String kind() {
    return "categorical";
  }

  @Override
  public int cardinality() {
    return lookup.cardinality();
  }

  /** The vocabulary, or null for a hashed field. */
  public List<String> vocab() {
    return lookup.vocab();
  }

  /** The bucket count of a hashed field, or null. */
  public Long hashBuckets() {
    return lookup.hashBuckets();
  }

  /** The id of one raw value. */
  public long encode(Object value) {
    return lookup.encode(value);
  }

  @Override
  public void encodeInto(Object value, long[] out, int offset) {
    out[offset] = lookup.encode(value);
  }
}
