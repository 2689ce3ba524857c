package dev.kdaliens.sample;

import android.content.Context;
import android.content.res.AssetManager;
import dev.kdaliens.encoder.BundleManifest;
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileInputStream;
import java.io.FileNotFoundException;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Arrays;

/**
 * Installs the bundle shipped in the APK's assets ({@code manifest.json} plus its model file)
 * into the app's files folder, where ExecuTorch can open it by path.
 *
 * <p>The copy is made on first start, and again whenever the APK carries another manifest or
 * the copied model no longer matches its SHA-256 in the manifest; each file is written to a
 * temporary name and renamed, so a half-copied or corrupt model is never loaded.
 */
public final class BundleAssets {
  /** Thrown when the APK has no bundle in its assets. */
  public static final class MissingBundleException extends IOException {
    private static final long serialVersionUID = 1L;

    MissingBundleException(String message) {
      super(message);
    }
  }

  /** An installed bundle: the parsed manifest and the model file on disk. */
  public static final class Installed {
    public final BundleManifest manifest;
    public final File modelFile;

    Installed(BundleManifest manifest, File modelFile) {
      this.manifest = manifest;
      this.modelFile = modelFile;
    }
  }

  private BundleAssets() {}

  /** Copies the bundle if needed and returns it; call it off the main thread. */
  public static Installed install(Context context) throws IOException {
    AssetManager assets = context.getAssets();
    byte[] manifestBytes;
    try {
      manifestBytes = readAll(assets.open("manifest.json"));
    } catch (FileNotFoundException e) {
      throw new MissingBundleException("assets/manifest.json is missing");
    }
    BundleManifest manifest = BundleManifest.parse(new String(manifestBytes, StandardCharsets.UTF_8));
    File dir = new File(context.getFilesDir(), "bundle");
    if (!dir.isDirectory() && !dir.mkdirs()) {
      throw new IOException("cannot create " + dir);
    }
    File installedManifest = new File(dir, "manifest.json");
    File model = new File(dir, manifest.modelFile());
    String expected = manifest.artifactSha256(manifest.modelFile());
    boolean current = installedManifest.isFile() && model.isFile()
        && Arrays.equals(readAll(new FileInputStream(installedManifest)), manifestBytes)
        && sha256(model).equals(expected); // models are small: checking on every start is cheap
    if (!current) {
      try {
        copy(assets.open(manifest.modelFile()), model);
      } catch (FileNotFoundException e) {
        throw new MissingBundleException("assets/" + manifest.modelFile() + " is missing (named by manifest.json)");
      }
      String got = sha256(model);
      if (!got.equals(expected)) {
        if (!model.delete()) {
          model.deleteOnExit();
        }
        throw new IOException(manifest.modelFile() + ": sha256 mismatch (manifest " + expected + ", file " + got
            + "): the asset is corrupt or does not belong to this manifest");
      }
      copy(new java.io.ByteArrayInputStream(manifestBytes), installedManifest); // last: marks the copy complete
    }
    return new Installed(manifest, model);
  }

  /** Reads a text asset (the catalogue), or returns null when it is absent. */
  public static String readTextAsset(Context context, String name) throws IOException {
    try {
      return new String(readAll(context.getAssets().open(name)), StandardCharsets.UTF_8);
    } catch (FileNotFoundException e) {
      return null;
    }
  }

  private static void copy(InputStream in, File dest) throws IOException {
    File tmp = new File(dest.getParentFile(), dest.getName() + ".tmp");
    try (InputStream src = in; FileOutputStream out = new FileOutputStream(tmp)) {
      byte[] buf = new byte[1 << 16];
      int n;
      while ((n = src.read(buf)) > 0) {
        out.write(buf, 0, n);
      }
      out.getFD().sync();
    }
    if (!tmp.renameTo(dest)) {
      throw new IOException("cannot rename " + tmp + " to " + dest);
    }
  }

  private static byte[] readAll(InputStream in) throws IOException {
    try (InputStream src = in) {
      ByteArrayOutputStream out = new ByteArrayOutputStream();
      byte[] buf = new byte[1 << 16];
      int n;
      while ((n = src.read(buf)) > 0) {
        out.write(buf, 0, n);
      }
      return out.toByteArray();
    }
  }

  static String sha256(File f) throws IOException {
    try (InputStream in = new FileInputStream(f)) {
      MessageDigest md = MessageDigest.getInstance("SHA-256");
      byte[] buf = new byte[1 << 16];
      int n;
      while ((n = in.read(buf)) > 0) {
        md.update(buf, 0, n);
      }
      StringBuilder sb = new StringBuilder();
      for (byte b : md.digest()) {
        sb.append(String.format("%02x", b & 0xff));
      }
      return sb.toString();
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
  }
}
