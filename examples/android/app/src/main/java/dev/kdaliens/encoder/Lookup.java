package dev.kdaliens.encoder;

import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/** Token to id for a vocabulary or a hash; shared by categorical and multi fields. */
final class Lookup {
  private final List<String> vocab; // null when hashing
  private final long hashBuckets; // 0 when a vocabulary is used
  private final Map<String, Long> index;

  private Lookup(List<String> vocab, long hashBuckets) {
    this.vocab = vocab;
    this.hashBuckets = hashBuckets;
    this.index = vocab == null ? null : new HashMap<>(vocab.size() * 2);
  }

  /** Builds the lookup of field {@code name}; exactly one of vocab and hashBuckets is set. */
  static Lookup create(String path, List<String> vocab, Long hashBuckets) {
    if ((vocab == null) == (hashBuckets == null)) {
      throw new EncoderException(path + ": give exactly one of vocab or hash_buckets");
    }
    if (hashBuckets != null) {
      if (hashBuckets < 1) {
        throw new EncoderException(path + ": hash_buckets must be >= 1, got " + hashBuckets);
      }
      return new Lookup(null, hashBuckets);
    }
    Lookup l = new Lookup(Collections.unmodifiableList(vocab), 0);
    for (int i = 0; i < vocab.size(); i++) {
      if (l.index.put(vocab.get(i), i + Tokens.N_RESERVED) != null) {
        throw new EncoderException(path + ": vocabulary has duplicate tokens (" + vocab.get(i) + ")");
      }
    }
    return l;
  }

  List<String> vocab() {
    return vocab;
  }

  Long hashBuckets() {
    return vocab == null ? hashBuckets : null;
  }

  int cardinality() {
    return (int) ((vocab != null ? vocab.size() : hashBuckets) + Tokens.N_RESERVED);
  }

  /** The id of a canonical token (null: missing, OOV). */
  long tokenId(String token) {
    if (token == null) {
      return Tokens.OOV_ID;
    }
    if (index != null) {
      Long id = index.get(token);
      return id == null ? Tokens.OOV_ID : id;
    }
    return Tokens.N_RESERVED + Tokens.stableHash(token) % hashBuckets;
  }

  /** The id of a raw value (normalized first). */
  long encode(Object value) {
    return tokenId(Tokens.normalizeToken(value));
  }
}
