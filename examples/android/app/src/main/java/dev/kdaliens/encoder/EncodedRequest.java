package dev.kdaliens.encoder;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * The model inputs of one rerank request ({@link RequestEncoder#encode}), for all unique
 * candidates at once, plus how to split them into model calls and how to map scores back to
 * the caller's candidate list.
 */
public final class EncodedRequest {
  private final List<InputTensor> inputs;
  private final List<String> uniqueCandidates;
  private final int[] firstIndex;
  private final int historyCount;
  private final int maxCandidates;

  EncodedRequest(List<InputTensor> inputs, List<String> uniqueCandidates, int[] firstIndex, int historyCount,
      int maxCandidates) {
    this.inputs = Collections.unmodifiableList(inputs);
    this.uniqueCandidates = Collections.unmodifiableList(uniqueCandidates);
    this.firstIndex = firstIndex;
    this.historyCount = historyCount;
    this.maxCandidates = maxCandidates;
  }

  /** Every signature input, in order; candidate inputs hold all unique candidates. */
  public List<InputTensor> inputs() {
    return inputs;
  }

  /** Canonical ids of the unique candidates, in first-seen order (the model's candidate order). */
  public List<String> uniqueCandidates() {
    return uniqueCandidates;
  }

  /** For each unique candidate, its first index in the caller's list. */
  public int firstIndex(int unique) {
    return firstIndex[unique];
  }

  /** Number of events in the encoded history. */
  public int historyCount() {
    return historyCount;
  }

  /**
   * The inputs of each model call: candidates in slices of at most the bundle's candidate
   * limit, every other input repeated. Empty when there are no candidates.
   */
  public List<List<InputTensor>> chunks() {
    int n = uniqueCandidates.size();
    List<List<InputTensor>> out = new ArrayList<>();
    for (int s = 0; s < n; s += maxCandidates) {
      int e = Math.min(n, s + maxCandidates);
      List<InputTensor> chunk = new ArrayList<>(inputs.size());
      for (InputTensor t : inputs) {
        boolean candidate = t.name().startsWith("cand_");
        chunk.add(candidate && !(s == 0 && e == n) ? t.sliceDim1(s, e) : t);
      }
      out.add(chunk);
    }
    return out;
  }

  /**
   * Orders the candidates by score: indices into the caller's candidate list, best first, one
   * per unique candidate; equal scores keep the caller's order.
   *
   * @param scores one score per unique candidate, in {@link #uniqueCandidates()} order
   * @throws EncoderException when a score is missing or not finite (the caller should then keep
   *     its own order: see {@link #givenOrder()})
   */
  public int[] rank(double[] scores) {
    int[] order = rankUnique(scores);
    int[] out = new int[order.length];
    for (int j = 0; j < order.length; j++) {
      out[j] = firstIndex[order[j]];
    }
    return out;
  }

  /** Like {@link #rank}, but as indices into {@link #uniqueCandidates()}. */
  public int[] rankUnique(double[] scores) {
    int n = uniqueCandidates.size();
    if (scores.length != n) {
      throw new EncoderException("expected " + n + " scores, got " + scores.length);
    }
    Integer[] order = new Integer[n];
    for (int j = 0; j < n; j++) {
      if (Double.isNaN(scores[j]) || Double.isInfinite(scores[j])) {
        throw new EncoderException("the model returned non-finite scores");
      }
      order[j] = j;
    }
    java.util.Arrays.sort(order, (a, b) -> {
      if (scores[a] != scores[b]) { // not Double.compare: -0.0 and 0.0 tie, as in Python
        return scores[a] > scores[b] ? -1 : 1;
      }
      return Integer.compare(firstIndex[a], firstIndex[b]);
    });
    int[] out = new int[n];
    for (int j = 0; j < n; j++) {
      out[j] = order[j];
    }
    return out;
  }

  /** The unique candidates in the caller's order (the fallback when the model fails). */
  public int[] givenOrder() {
    return firstIndex.clone();
  }
}
