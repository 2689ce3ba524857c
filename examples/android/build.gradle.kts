// Top-level build file: plugin versions only; the app module configures itself.
plugins {
    id("com.android.application") version "8.9.0" apply false
}
