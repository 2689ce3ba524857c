package dev.kdaliens.encoder;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Builds the exact model inputs of one rerank request, as {@code Ranker.rerank} in
 * {@code kdaliens/sdk/ranker.py} does: the history from the user's events (attributes from the
 * item cache), the user's attributes, the candidates (deduplicated, first place kept), laid out
 * in the signature's order, shapes and dtypes.
 *
 * <pre>{@code
 * RequestEncoder enc = new RequestEncoder(BundleManifest.parse(manifestText));
 * EncodedRequest req = enc.encode(userFeatures, candidateIds, log.events(user, now), now, cache, null);
 * for (List<InputTensor> chunk : req.chunks()) { ... run the model, collect the scores ... }
 * int[] best = req.rank(scores);   // indices into candidateIds, best first
 * }</pre>
 */
public final class RequestEncoder {
  private final BundleManifest manifest;
  private final FeatureEncoder encoder;

  public RequestEncoder(BundleManifest manifest) {
    this.manifest = manifest;
    this.encoder = new FeatureEncoder(manifest.spec());
  }

  public BundleManifest manifest() {
    return manifest;
  }

  public FeatureEncoder encoder() {
    return encoder;
  }

  /**
   * Encodes one request.
   *
   * @param userFeatures the user's attributes (null: none known)
   * @param candidates item ids (strings or integral numbers); duplicates keep their first place
   * @param events the user's behaviour events (maps with the item id field, {@code ts}, {@code
   *     event}), as the behaviour log returns them; null or empty for a new user
   * @param now the request time, in seconds since the epoch
   * @param cache item attributes for candidates and history events (null: ids only)
   * @param seed overrides the bundle's sampling seed (null on a device)
   * @throws EncoderException for bad candidates, events or attribute values
   */
  public EncodedRequest encode(Map<String, ?> userFeatures, List<?> candidates,
      List<? extends Map<String, ?>> events, double now, ItemAttributes cache, Long seed) {
    if (Double.isNaN(now) || Double.isInfinite(now)) {
      throw new EncoderException("now must be a finite number of seconds, got " + now);
    }
    if (candidates == null) {
      throw new EncoderException("candidates must be a list of item ids, got null");
    }
    // Candidates: validated once, deduplicated by canonical id (first place kept).
    LinkedHashMap<String, Integer> first = new LinkedHashMap<>();
    for (int i = 0; i < candidates.size(); i++) {
      Object c = candidates.get(i);
      if ((c instanceof Double || c instanceof Float)
          && (Double.isNaN(((Number) c).doubleValue()) || Double.isInfinite(((Number) c).doubleValue()))) {
        throw new EncoderException("candidates[" + i + "] is not a usable id: " + c);
      }
      if (!(c instanceof String || c instanceof Number || c instanceof byte[])) {
        throw new EncoderException("candidates[" + i + "] must be a string or int id, got " + Tokens.typeName(c));
      }
      String key = Tokens.normalizeToken(c);
      if (key == null) {
        throw new EncoderException("candidates[" + i + "] is an empty id");
      }
      if (!first.containsKey(key)) {
        first.put(key, i);
      }
    }
    List<String> unique = new ArrayList<>(first.keySet());
    int[] firstIndex = new int[unique.size()];
    for (int j = 0; j < unique.size(); j++) {
      firstIndex[j] = first.get(unique.get(j));
    }
    if (unique.isEmpty()) {
      return new EncodedRequest(Collections.<InputTensor>emptyList(), unique, firstIndex, 0,
          manifest.maxCandidates());
    }

    List<? extends Map<String, ?>> evs = events == null ? Collections.<Map<String, ?>>emptyList() : events;
    History hist = encoder.encodeHistory(evs, now, cache, seed);
    EncodedRows user = encoder.encodeUser(userFeatures);
    Map<String, ? extends Map<String, ?>> attrs =
        cache == null ? Collections.<String, Map<String, ?>>emptyMap() : cache.getMany(unique);
    String idf = manifest.spec().itemIdField();
    List<Map<String, Object>> rows = new ArrayList<>(unique.size());
    for (String u : unique) {
      Map<String, ?> a = attrs == null ? null : attrs.get(u);
      Map<String, Object> row = a == null ? new LinkedHashMap<>() : new LinkedHashMap<>(a);
      row.put(idf, u);
      rows.add(row);
    }
    EncodedRows cands;
    try {
      cands = encoder.encodeItems(rows);
    } catch (EncoderException e) {
      throw new EncoderException("candidate " + e.getMessage(), e);
    }

    int n = unique.size();
    int length = hist.length();
    List<InputTensor> inputs = new ArrayList<>(manifest.inputs().size());
    for (BundleManifest.InputSpec in : manifest.inputs()) {
      int w = in.width;
      boolean multi = isMulti(in);
      switch (in.source) {
        case USER:
          inputs.add(InputTensor.ofIds(in.name, in.dtype, multi ? new long[] {1, w} : new long[] {1},
              user.get(in.key)));
          break;
        case HISTORY:
          inputs.add(InputTensor.ofIds(in.name, in.dtype, multi ? new long[] {1, length, w} : new long[] {1, length},
              hist.get(in.key)));
          break;
        case HISTORY_MASK:
          inputs.add(InputTensor.ofMask(in.name, in.dtype, new long[] {1, length}, hist.maskRef()));
          break;
        default:
          inputs.add(InputTensor.ofIds(in.name, in.dtype, multi ? new long[] {1, n, w} : new long[] {1, n},
              cands.get(in.key)));
      }
    }
    return new EncodedRequest(inputs, unique, firstIndex, hist.count(), manifest.maxCandidates());
  }

  private boolean isMulti(BundleManifest.InputSpec in) {
    FeatureSpec spec = manifest.spec();
    switch (in.source) {
      case USER:
        return spec.userField(in.key) instanceof MultiField;
      case CANDIDATE:
        return spec.itemField(in.key) instanceof MultiField;
      case HISTORY:
        String f = in.key.substring("hist_".length());
        return !in.key.equals("hist_event") && !in.key.equals("hist_time_gap") && spec.hasItemField(f)
            && spec.itemField(f) instanceof MultiField;
      default:
        return false;
    }
  }
}
