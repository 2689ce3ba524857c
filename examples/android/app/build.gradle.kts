plugins {
    id("com.android.application")
}

val executorchVersion: String by project

android {
    namespace = "dev.kdaliens.sample"
    compileSdk = 35

    defaultConfig {
        applicationId = "dev.kdaliens.sample"
        // ExecuTorch itself needs 23; 26 gives the encoder's java.lang unsigned helpers natively.
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        ndk {
            // The ABIs the ExecuTorch AAR ships native code for.
            abiFilters += listOf("arm64-v8a", "x86_64")
        }
    }

    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_11
        targetCompatibility = JavaVersion.VERSION_11
    }

    androidResources {
        // The model is copied out of the APK once; storing it uncompressed makes that a plain copy.
        noCompress += "pte"
    }
}

dependencies {
    implementation("org.pytorch:executorch-android:$executorchVersion")
}
