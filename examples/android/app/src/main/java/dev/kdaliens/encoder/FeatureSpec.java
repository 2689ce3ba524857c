package dev.kdaliens.encoder;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Every model input, as declared by a bundle manifest's {@code feature_spec}: user fields,
 * item fields, the history settings, the event vocabulary and the time-gap buckets.
 *
 * <p>Read it with {@link #fromJson}; it is immutable.
 */
public final class FeatureSpec {
  /** The spec layout this encoder reads. */
  public static final int FORMAT_VERSION = 1;

  /** Seconds: 1 min, 10 min, 1 h, 6 h, 1 d, 3 d, 1 w, 1 mo, 3 mo, 1 y. */
  public static final double[] DEFAULT_TIME_GAP_BOUNDARIES = {
    60.0, 600.0, 3600.0, 21600.0, 86400.0, 259200.0, 604800.0, 2592000.0, 7776000.0, 31536000.0,
  };

  private final List<Field> userFields;
  private final List<Field> itemFields;
  private final Map<String, Field> itemByName;
  private final String itemIdField;
  private final String userIdField;
  private final HistorySpec history;
  private final List<String> historyItemFields;
  private final List<String> eventVocab;
  private final CategoricalField eventField;
  private final String defaultEvent;
  private final NumericField timeGapField;

  private FeatureSpec(List<Field> userFields, List<Field> itemFields, String itemIdField, String userIdField,
      HistorySpec history, List<String> historyItemFields, List<String> eventVocab, double[] timeGapBoundaries,
      String defaultEvent, String path) {
    this.userFields = Collections.unmodifiableList(new ArrayList<>(userFields));
    this.itemFields = Collections.unmodifiableList(new ArrayList<>(itemFields));
    this.itemByName = new LinkedHashMap<>();
    checkUnique(userFields, path + ".user_fields");
    checkUnique(itemFields, path + ".item_fields");
    for (Field f : itemFields) {
      itemByName.put(f.name(), f);
    }
    if (!itemByName.containsKey(itemIdField)) {
      throw new EncoderException(path + ": item_fields must include the item id field '" + itemIdField + "'");
    }
    this.itemIdField = itemIdField;
    this.userIdField = userIdField;
    this.history = history;
    if (historyItemFields == null) {
      this.historyItemFields = Collections.unmodifiableList(new ArrayList<>(itemByName.keySet()));
    } else {
      for (String name : historyItemFields) {
        if (!itemByName.containsKey(name)) {
          throw new EncoderException(path + ".history_item_fields: '" + name + "' is not an item field");
        }
      }
      this.historyItemFields = Collections.unmodifiableList(new ArrayList<>(historyItemFields));
    }
    this.eventVocab = Collections.unmodifiableList(new ArrayList<>(eventVocab));
    this.eventField = new CategoricalField("event", this.eventVocab, null, path + ".event_vocab");
    if (defaultEvent != null && !this.eventVocab.contains(defaultEvent)) {
      throw new EncoderException(path + ".default_event: '" + defaultEvent + "' is not in the event vocabulary");
    }
    this.defaultEvent = defaultEvent;
    this.timeGapField = new NumericField("time_gap", timeGapBoundaries, path + ".time_gap_boundaries");
  }

  private static void checkUnique(List<Field> fields, String path) {
    Set<String> seen = new HashSet<>();
    for (Field f : fields) {
      if (!seen.add(f.name())) {
        throw new EncoderException(path + ": duplicate field name '" + f.name() + "'");
      }
    }
  }

  public List<Field> userFields() {
    return userFields;
  }

  public List<Field> itemFields() {
    return itemFields;
  }

  /** The item field of this name. */
  public Field itemField(String name) {
    Field f = itemByName.get(name);
    if (f == null) {
      throw new EncoderException("no item field named '" + name + "'");
    }
    return f;
  }

  /** The user field of this name, or null. */
  public Field userField(String name) {
    for (Field f : userFields) {
      if (f.name().equals(name)) {
        return f;
      }
    }
    return null;
  }

  public boolean hasItemField(String name) {
    return itemByName.containsKey(name);
  }

  public String itemIdField() {
    return itemIdField;
  }

  public String userIdField() {
    return userIdField;
  }

  public HistorySpec history() {
    return history;
  }

  /** Item fields gathered for every history event, in the model's order. */
  public List<String> historyItemFields() {
    return historyItemFields;
  }

  public List<String> eventVocab() {
    return eventVocab;
  }

  /** The kind an event logged without one reads as, or null (out of vocabulary). */
  public String defaultEvent() {
    return defaultEvent;
  }

  /** Event kinds: token {@code eventVocab[i]} encodes to {@code i + 2}. */
  public CategoricalField eventField() {
    return eventField;
  }

  /** Buckets of the seconds between an event and the request. */
  public NumericField timeGapField() {
    return timeGapField;
  }

  /**
   * Reads a {@code feature_spec} object; {@code path} names it in errors (for example
   * {@code "manifest.feature_spec"}).
   *
   * @throws EncoderException naming the offending key when the spec is malformed
   */
  public static FeatureSpec fromJson(Object json, String path) {
    Map<String, Object> d = Json.asObject(json, path);
    if (d.containsKey("format_version")) {
      Object v = d.get("format_version");
      if (!(v instanceof Number) || ((Number) v).doubleValue() != FORMAT_VERSION) {
        throw new EncoderException(path + ": format_version " + Tokens.describe(v)
            + " is not supported (this encoder reads " + FORMAT_VERSION + ")");
      }
    }
    List<Field> user = fields(Json.require(d, "user_fields", path), path + ".user_fields");
    List<Field> item = fields(Json.require(d, "item_fields", path), path + ".item_fields");
    String itemId = d.containsKey("item_id_field")
        ? Json.asString(d.get("item_id_field"), path + ".item_id_field") : "item_id";
    String userId = d.containsKey("user_id_field")
        ? Json.asString(d.get("user_id_field"), path + ".user_id_field") : "user_id";
    HistorySpec history = HistorySpec.fromJson(
        d.containsKey("history") ? d.get("history") : new LinkedHashMap<String, Object>(), path + ".history");
    List<String> histFields = null;
    Object hf = d.get("history_item_fields");
    if (hf != null && !(hf instanceof List && ((List<?>) hf).isEmpty())) { // empty: all item fields
      List<Object> raw = Json.asArray(hf, path + ".history_item_fields");
      histFields = new ArrayList<>(raw.size());
      for (int i = 0; i < raw.size(); i++) {
        histFields.add(Json.asString(raw.get(i), path + ".history_item_fields[" + i + "]"));
      }
    }
    List<String> events = new ArrayList<>();
    if (d.containsKey("event_vocab")) {
      List<Object> raw = Json.asArray(d.get("event_vocab"), path + ".event_vocab");
      for (int i = 0; i < raw.size(); i++) {
        try {
          events.add(Tokens.pythonStr(raw.get(i)));
        } catch (EncoderException e) {
          throw new EncoderException(path + ".event_vocab[" + i + "]: " + e.getMessage(), e);
        }
      }
    }
    double[] gaps = DEFAULT_TIME_GAP_BOUNDARIES;
    if (d.containsKey("time_gap_boundaries")) {
      List<Object> raw = Json.asArray(d.get("time_gap_boundaries"), path + ".time_gap_boundaries");
      gaps = new double[raw.size()];
      for (int i = 0; i < gaps.length; i++) {
        gaps[i] = Field.pyFloat(raw.get(i), path + ".time_gap_boundaries[" + i + "]");
      }
    }
    String defaultEvent = d.get("default_event") == null
        ? null : Json.asString(d.get("default_event"), path + ".default_event");
    return new FeatureSpec(user, item, itemId, userId, history, histFields, events, gaps, defaultEvent, path);
  }

  private static List<Field> fields(Object json, String path) {
    List<Object> raw = Json.asArray(json, path);
    List<Field> out = new ArrayList<>(raw.size());
    for (int i = 0; i < raw.size(); i++) {
      out.add(Field.fromJson(raw.get(i), path + "[" + i + "]"));
    }
    return out;
  }

  @Override
  public String toString() {
    return "FeatureSpec(user_fields=" + names(userFields) + ", item_fields=" + names(itemFields) + ", " + history
        + ", history_item_fields=" + historyItemFields + ", event_vocab=" + eventVocab + ", time_gap_boundaries="
        + Arrays.toString(timeGapField.boundaries()) + ")";
  }

  private static List<String> names(List<Field> fields) {
    List<String> out = new ArrayList<>();
    for (Field f : fields) {
      out.add(f.name());
    }
    return out;
  }
}
