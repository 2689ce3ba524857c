package dev.kdaliens.encoder;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Turns raw item, user and event maps into model ids, following a {@link FeatureSpec}: the
 * Java port of {@code FeatureEncoder} in {@code kdaliens/sdk/features.py}.
 *
 * <p>Raw maps hold JSON-like values (see {@link Tokens}). Unknown keys are ignored; a missing
 * key encodes like a missing value (id 1). Thread-safe: it holds no mutable state.
 */
public final class FeatureEncoder {
  private final FeatureSpec spec;
  private final HistorySampler sampler;

  public FeatureEncoder(FeatureSpec spec) {
    this.spec = spec;
    this.sampler = new HistorySampler(spec.history());
  }

  public FeatureSpec spec() {
    return spec;
  }

  public HistorySampler sampler() {
    return sampler;
  }

  // ------------------------------------------------------------------ attribute rows

  private EncodedRows encodeRows(List<Field> fields, List<? extends Map<String, ?>> rows, String what) {
    if (rows == null) {
      throw new EncoderException(what + ": expected a list of maps, got null");
    }
    int n = rows.size();
    LinkedHashMap<String, long[]> arrays = new LinkedHashMap<>();
    LinkedHashMap<String, Integer> widths = new LinkedHashMap<>();
    for (Field f : fields) {
      int w = f.width();
      long[] out = new long[n * w];
      for (int i = 0; i < n; i++) {
        Map<String, ?> row = rows.get(i);
        if (row == null) {
          throw new EncoderException(what + "[" + i + "]: expected a map, got null");
        }
        try {
          f.encodeInto(row.get(f.name()), out, i * w);
        } catch (EncoderException e) {
          throw new EncoderException(what + "[" + i + "]." + f.name() + ": " + e.getMessage(), e);
        }
      }
      arrays.put(f.name(), out);
      widths.put(f.name(), w);
    }
    return new EncodedRows(n, arrays, widths);
  }

  /** Encodes item attribute maps (one row each) for every item field. */
  public EncodedRows encodeItems(List<? extends Map<String, ?>> rows) {
    return encodeRows(spec.itemFields(), rows, "items");
  }

  /** Encodes user attribute maps (one row each) for every user field. */
  public EncodedRows encodeUsers(List<? extends Map<String, ?>> rows) {
    return encodeRows(spec.userFields(), rows, "users");
  }

  /** One user's attributes (null: none known) as one row. */
  public EncodedRows encodeUser(Map<String, ?> features) {
    Map<String, ?> f = features == null ? Collections.<String, Object>emptyMap() : features;
    return encodeRows(spec.userFields(), Collections.singletonList(f), "user_features");
  }

  // ------------------------------------------------------------------ events

  /** Event kinds to ids: a kind missing from the vocabulary is 1; null (no kind) is the spec's default kind. */
  public long[] encodeEvents(List<?> kinds) {
    long[] out = new long[kinds.size()];
    CategoricalField ev = spec.eventField();
    for (int i = 0; i < out.length; i++) {
      try {
        Object kind = kinds.get(i);
        out[i] = ev.encode(kind == null ? spec.defaultEvent() : kind);
      } catch (EncoderException e) {
        throw new EncoderException("events[" + i + "].event: " + e.getMessage(), e);
      }
    }
    return out;
  }

  /** Bucket ids of the seconds between each event and {@code now} (future events: 0 s). */
  public long[] encodeTimeGaps(double now, double[] ts) {
    long[] out = new long[ts.length];
    NumericField gap = spec.timeGapField();
    for (int i = 0; i < ts.length; i++) {
      out[i] = gap.encodeNumber(Math.max(now - ts[i], 0.0));
    }
    return out;
  }

  // ------------------------------------------------------------------ history

  /**
   * Samples and gathers one request's history from a time-ordered event store: the Java form
   * of {@code gather_history} for a single request.
   *
   * @param eventItems encoded item fields per event ({@code historyItemFields}, row-major)
   * @param eventIds encoded event kinds
   * @param eventTs event times in seconds
   * @param start the first event of this user in the store
   * @param nPast how many events from {@code start} are the request's past
   * @param now the request time in seconds
   * @param seed the sampling seed (null: the spec's)
   */
  public History gatherHistory(EncodedRows eventItems, long[] eventIds, double[] eventTs, int start, int nPast,
      double now, Long seed) {
    int length = spec.history().length();
    HistorySampler.Sample s = sampler.sample(nPast, seed == null ? spec.history().seed : seed);
    int nEvents = eventIds.length;
    int[] flat = new int[length];
    boolean[] ok = new boolean[length];
    for (int l = 0; l < length; l++) {
      if (s.mask[l]) {
        flat[l] = start + s.index[l];
        if (flat[l] >= nEvents && nEvents > 0) {
          throw new EncoderException("history indices run past the event store");
        }
        ok[l] = nEvents > 0;
      }
    }
    Map<String, long[]> arrays = new LinkedHashMap<>();
    Map<String, Integer> widths = new LinkedHashMap<>();
    for (String name : spec.historyItemFields()) {
      int w = spec.itemField(name).width();
      long[] out = new long[length * w];
      if (nEvents > 0) {
        long[] src = eventItems.get(name);
        for (int l = 0; l < length; l++) {
          if (ok[l]) {
            System.arraycopy(src, flat[l] * w, out, l * w, w);
          }
        }
      }
      arrays.put("hist_" + name, out);
      widths.put("hist_" + name, w);
    }
    long[] ev = new long[length];
    long[] gap = new long[length];
    NumericField gapField = spec.timeGapField();
    for (int l = 0; l < length; l++) {
      if (ok[l]) {
        ev[l] = eventIds[flat[l]];
        gap[l] = gapField.encodeNumber(Math.max(now - eventTs[flat[l]], 0.0));
      }
    }
    arrays.put("hist_event", ev);
    widths.put("hist_event", 1);
    arrays.put("hist_time_gap", gap);
    widths.put("hist_time_gap", 1);
    return new History(length, arrays, widths, ok);
  }

  /**
   * Encodes one user's raw behaviour events into the fixed-length history the model takes.
   *
   * <p>Each event is a map with the spec's item id field, {@code ts} (seconds) and optionally
   * {@code event}. Events may come in any order: they are sorted by time (stably); events at or
   * after {@code now} are dropped. The sampler picks which events the model sees, and only
   * those have their attributes fetched from {@code attributes}.
   *
   * @param events raw events
   * @param now the request time, in seconds
   * @param attributes item attributes (null: none; items are then encoded by id alone)
   * @param seed overrides the spec's sampling seed (null: the spec's, as on a device)
   * @throws EncoderException for an event without an item id or a usable {@code ts}
   */
  public History encodeHistory(List<? extends Map<String, ?>> events, double now, ItemAttributes attributes,
      Long seed) {
    if (events == null) {
      throw new EncoderException("events: expected a list of maps, got null");
    }
    String idf = spec.itemIdField();
    List<Past> past = new ArrayList<>();
    for (int i = 0; i < events.size(); i++) {
      Map<String, ?> e = events.get(i);
      if (e == null) {
        throw new EncoderException("events[" + i + "]: expected a map, got null");
      }
      if (!e.containsKey(idf)) {
        throw new EncoderException("events[" + i + "] has no '" + idf + "'");
      }
      double t = Tokens.toFloat(e.get("ts"));
      if (Double.isNaN(t) || Double.isInfinite(t)) {
        throw new EncoderException("events[" + i + "] has no usable 'ts': " + Tokens.describe(e.get("ts")));
      }
      if (t < now) {
        past.add(new Past(t, i, e));
      }
    }
    // By time, then by position (-0.0 and 0.0 are the same time, as in Python).
    past.sort((a, b) -> a.ts < b.ts ? -1 : a.ts > b.ts ? 1 : Integer.compare(a.index, b.index));
    int[] keepPos = sampler.positions(past.size(), seed == null ? spec.history().seed : seed);
    List<Past> keep = new ArrayList<>(keepPos.length);
    List<Object> ids = new ArrayList<>(keepPos.length);
    for (int p : keepPos) {
      keep.add(past.get(p));
      ids.add(past.get(p).event.get(idf));
    }
    Map<String, ? extends Map<String, ?>> attrs = Collections.emptyMap();
    if (attributes != null && !ids.isEmpty()) {
      Map<String, ? extends Map<String, ?>> got = attributes.getMany(ids);
      if (got != null) {
        attrs = got;
      }
    }
    List<Map<String, Object>> rows = new ArrayList<>(keep.size());
    List<Object> kinds = new ArrayList<>(keep.size());
    double[] ts = new double[keep.size()];
    for (int j = 0; j < keep.size(); j++) {
      Object iid = ids.get(j);
      Map<String, ?> a = iid instanceof String ? attrs.get(iid) : null;
      if (a == null) {
        a = attrs.get(Tokens.normalizeToken(iid));
      }
      Map<String, Object> row = a == null ? new LinkedHashMap<>() : new LinkedHashMap<>(a);
      row.put(idf, iid);
      rows.add(row);
      kinds.add(keep.get(j).event.get("event"));
      ts[j] = keep.get(j).ts;
    }
    EncodedRows items;
    try {
      items = encodeItems(rows);
    } catch (EncoderException e) {
      throw new EncoderException("history " + e.getMessage(), e);
    }
    long[] ev = encodeEvents(kinds);
    return gatherHistory(items, ev, ts, 0, keep.size(), now, seed);
  }

  private static final class Past {
    final double ts;
    final int index;
    final Map<String, ?> event;

    Past(double ts, int index, Map<String, ?> event) {
      this.ts = ts;
      this.index = index;
      this.event = event;
    }
  }
}
