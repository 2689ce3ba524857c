package dev.kdaliens.sample;

import android.util.Log;
import dev.kdaliens.encoder.BundleManifest;
import dev.kdaliens.encoder.EncodedRequest;
import dev.kdaliens.encoder.EncoderException;
import dev.kdaliens.encoder.InputTensor;
import dev.kdaliens.encoder.RequestEncoder;
import java.io.File;
import java.util.List;
import java.util.Map;
import org.pytorch.executorch.EValue;
import org.pytorch.executorch.Module;
import org.pytorch.executorch.Tensor;

/**
 * A bundle's ExecuTorch program plus the encoder that feeds it: the Android counterpart of the
 * Python SDK's {@code Ranker.rerank}. Call {@link #rerank} off the main thread.
 *
 * <p>A failing model call does not crash the app: the candidates come back in the order given,
 * with {@link Result#fallback} set.
 */
public final class OnDeviceRanker implements AutoCloseable {
  private static final String TAG = "kdaliens";

  private final BundleManifest manifest;
  private final RequestEncoder encoder;
  private final Module module;

  /**
   * Loads {@code modelFile} (the bundle's {@code .pte}) with one intra-op thread.
   *
   * @throws IllegalArgumentException when the bundle is not an ExecuTorch bundle
   */
  public OnDeviceRanker(BundleManifest manifest, File modelFile) {
    if (!"executorch".equals(manifest.target())) {
      throw new IllegalArgumentException("bundle target is '" + manifest.target() + "', this app runs 'executorch'");
    }
    this.manifest = manifest;
    this.encoder = new RequestEncoder(manifest);
    this.module = Module.load(modelFile.getAbsolutePath(), Module.LOAD_MODE_MMAP, 1);
    module.loadMethod(manifest.method()); // load now rather than on the first tap
  }

  /** One rerank: the caller's candidate indices, best first, with scores and timings. */
  public static final class Result {
    public final int[] order;
    /** Score of each entry of {@link #order} (NaN after a fallback). */
    public final double[] scores;
    public final int historyCount;
    public final int modelCalls;
    public final long encodeMicros;
    public final long modelMicros;
    public final boolean fallback;
    public final String error;

    Result(int[] order, double[] scores, int historyCount, int modelCalls, long encodeMicros, long modelMicros,
        boolean fallback, String error) {
      this.order = order;
      this.scores = scores;
      this.historyCount = historyCount;
      this.modelCalls = modelCalls;
      this.encodeMicros = encodeMicros;
      this.modelMicros = modelMicros;
      this.fallback = fallback;
      this.error = error;
    }
  }

  /**
   * Scores {@code candidates} for {@code userId} and orders them best first.
   *
   * @param userId the user whose events in {@code store} make the history
   * @param candidates item ids; duplicates keep their first place
   * @param userFeatures the user's attributes (null: none)
   * @param store the item cache and behaviour log
   * @param now the request time, in seconds since the epoch
   * @throws EncoderException for unusable input (an empty id, say)
   */
  public Result rerank(String userId, List<?> candidates, Map<String, ?> userFeatures, DeviceStore store,
      double now) {
    long t0 = System.nanoTime();
    List<Map<String, Object>> events = store.events(userId, now);
    EncodedRequest req = encoder.encode(userFeatures, candidates, events, now, store, null);
    long t1 = System.nanoTime();
    int n = req.uniqueCandidates().size();
    double[] scores = new double[n];
    int calls = 0;
    try {
      int offset = 0;
      for (List<InputTensor> chunk : req.chunks()) {
        EValue[] inputs = new EValue[chunk.size()];
        for (int i = 0; i < inputs.length; i++) {
          inputs[i] = EValue.from(toTensor(chunk.get(i)));
        }
        EValue[] outputs = module.execute(manifest.method(), inputs);
        if (outputs.length < 1) {
          throw new IllegalStateException("the model returned no outputs");
        }
        float[] score = outputs[0].toTensor().getDataAsFloatArray(); // output 0: "score", (1, n_chunk)
        for (int j = 0; j < score.length; j++) {
          scores[offset + j] = score[j];
        }
        offset += score.length;
        calls++;
      }
      if (offset != n) {
        throw new IllegalStateException("the model returned " + offset + " scores for " + n + " candidates");
      }
      int[] best = req.rankUnique(scores);
      long t2 = System.nanoTime();
      int[] order = new int[n];
      double[] ordered = new double[n];
      for (int j = 0; j < n; j++) {
        order[j] = req.firstIndex(best[j]);
        ordered[j] = scores[best[j]];
      }
      return new Result(order, ordered, req.historyCount(), calls, (t1 - t0) / 1000, (t2 - t1) / 1000, false, null);
    } catch (RuntimeException e) { // a runtime failure must not crash the app
      Log.e(TAG, "model call failed; keeping the given order", e);
      double[] nan = new double[n];
      java.util.Arrays.fill(nan, Double.NaN);
      return new Result(req.givenOrder(), nan, req.historyCount(), calls, (t1 - t0) / 1000,
          (System.nanoTime() - t1) / 1000, true, e.getClass().getSimpleName() + ": " + e.getMessage());
    }
  }

  private static Tensor toTensor(InputTensor t) {
    switch (t.dtype()) {
      case INT64:
        return Tensor.fromBlob(t.longData(), t.shape());
      case INT32:
        return Tensor.fromBlob(t.intData(), t.shape());
      default:
        return Tensor.fromBlob(t.floatData(), t.shape());
    }
  }

  public BundleManifest manifest() {
    return manifest;
  }

  @Override
  public void close() {
    module.destroy();
  }
}
