package dev.kdaliens.encoder;

import java.util.List;
import java.util.Map;

/**
 * Where the encoder gets item attributes: the device's item cache.
 *
 * <p>The contract is that of the Python SDK's {@code ItemCache.get_many}: given raw item ids,
 * return canonical id ({@link Tokens#normalizeToken}) to attribute map, for the ids that are
 * cached; leave out the others (they are encoded by id alone, with OOV attributes).
 */
public interface ItemAttributes {
  /**
   * @param ids raw item ids (strings or numbers), in request order, possibly repeated
   * @return canonical id to attributes; never null
   */
  Map<String, ? extends Map<String, ?>> getMany(List<?> ids);
}
