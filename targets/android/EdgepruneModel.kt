// EdgepruneModel.kt: opens the model edgeprune built for this phone. Copied into the app by
// `edgeprune integrate android` (from edgeprune's targets/android/); rewritten on every run.
//
// Play delivers this phone's device-group variant of the assets under assets/edgeprune/ (manifest.json and the
// model files). The manifest says which runtime each file is for and the tensors it takes and gives; this picks the
// first preferred runtime the app has a file for and opens the file with the manifest's tensor specs.
//
//   EdgepruneModel.open(context).use { model -> val scores = model.run(pixels) }
//   EdgepruneModel.open(context).use { model -> val (boxes, scores) = model.runAll(pixels) }  // every output
package dev.edgeprune

import android.content.Context
import org.json.JSONArray
import org.json.JSONObject

/**
 * One input or output tensor as the manifest describes it; int8 tensors carry scale and zero point. [key] (outputs
 * only) is the output's place in what the model's forward returns: 'output' for a lone tensor, a dict key, an index.
 */
class TensorSpec(
    val name: String,
    val shape: LongArray,
    val dtype: String,
    val scale: Float?,
    val zeroPoint: Int?,
    val key: String? = null,
) {
    /** Number of values the tensor holds. */
    val elements: Int = shape.fold(1L) { n, d -> n * d }.toInt()

    /** True for int8 tensors: real = scale * (q - zeroPoint). */
    val quantized: Boolean get() = scale != null && zeroPoint != null

    fun quantize(x: FloatArray): ByteArray =
        ByteArray(x.size) { i -> (Math.round(x[i] / scale!!) + zeroPoint!!).coerceIn(-128, 127).toByte() }

    fun dequantize(q: ByteArray): FloatArray = FloatArray(q.size) { i -> scale!! * (q[i] - zeroPoint!!) }

    companion object {
        fun parse(o: JSONObject): TensorSpec {
            val dims = o.getJSONArray("shape")
            return TensorSpec(
                o.getString("name"),
                LongArray(dims.length()) { dims.getLong(it) },
                o.getString("dtype"),
                if (o.has("scale")) o.getDouble("scale").toFloat() else null,
                if (o.has("zero_point")) o.getInt("zero_point") else null,
                if (o.has("key")) o.getString("key") else null,
            )
        }

        /** Every entry of a manifest tensor list, in the manifest's order. */
        fun parseAll(list: JSONArray): List<TensorSpec> = (0 until list.length()).map { parse(list.getJSONObject(it)) }
    }
}

/** One runtime session over one model file. */
interface Runner : AutoCloseable {
    /**
     * One inference: float input laid out as the manifest's input shape in; every output the manifest lists, in its
     * order, as floats out (int8 outputs dequantised with their own scale and zero point).
     */
    fun runAll(input: FloatArray): List<FloatArray>
}

/** What a runtime needs to open a file: the asset path, its sha256 (from the manifest), the tensors, threads. */
class ModelFile(
    val asset: String,
    val sha256: String,
    val input: TensorSpec,
    val outputs: List<TensorSpec>,
    val threads: Int,
) {
    init {
        require(outputs.isNotEmpty()) { "the manifest lists no outputs for $asset" }
    }

    /** The first output. */
    val output: TensorSpec get() = outputs[0]
}

class EdgepruneModel private constructor(
    /** The manifest edgeprune wrote for the device profile this variant was built for. */
    val manifest: JSONObject,
    /** The target (runtime) opened: executorch, tflite or onnx. */
    val target: String,
    val file: ModelFile,
    private val runner: Runner,
) : AutoCloseable {

    /** The device profile Play picked this variant for (this phone's device group). */
    val device: String get() = manifest.getJSONObject("device").getString("name")

    val input: TensorSpec get() = file.input
    val output: TensorSpec get() = file.output

    /** Every output, in the manifest's order (the order the model's forward returns them). */
    val outputs: List<TensorSpec> get() = file.outputs

    /** One inference: every output in [outputs]' order, each as floats laid out as its shape. */
    fun runAll(input: FloatArray): List<FloatArray> {
        require(input.size == file.input.elements) {
            "input has ${input.size} values; ${file.input.name} takes ${file.input.shape.joinToString("x")}"
        }
        val out = runner.runAll(input)
        check(out.size == file.outputs.size) {
            "${file.asset} gave ${out.size} outputs; the manifest lists ${file.outputs.size}"
        }
        return out
    }

    /** One inference: the first output (of a model with one output, the output). */
    fun run(input: FloatArray): FloatArray = runAll(input)[0]

    override fun close() = runner.close()

    companion object {
        const val ASSET_DIR = "edgeprune"

        /**
         * Opens the first of [preferred] targets (default: the runtimes this app was integrated with, in the
         * registry's order) that assets/edgeprune holds a file for. [threads] 0 lets the runtime choose.
         */
        @JvmStatic
        @JvmOverloads
        fun open(context: Context, preferred: List<String> = RUNTIMES.keys.toList(), threads: Int = 0): EdgepruneModel {
            val manifest = context.assets.open("$ASSET_DIR/manifest.json").bufferedReader().use { JSONObject(it.readText()) }
            val present = context.assets.list(ASSET_DIR)?.toSet().orEmpty()
            val artifacts = manifest.getJSONArray("artifacts")
            val entries = (0 until artifacts.length()).map { artifacts.getJSONObject(it) }
            for (target in preferred) {
                val opener = RUNTIMES[target] ?: continue
                val entry = entries.firstOrNull { it.getString("target") == target && it.getString("path") in present }
                    ?: continue
                val file = ModelFile(
                    "$ASSET_DIR/${entry.getString("path")}",
                    entry.getString("sha256"),
                    TensorSpec.parse(entry.getJSONArray("inputs").getJSONObject(0)),
                    TensorSpec.parseAll(entry.getJSONArray("outputs")),
                    threads,
                )
                return EdgepruneModel(manifest, target, file, opener(context, file))
            }
            throw IllegalStateException(
                "assets/$ASSET_DIR holds no model for $preferred (files: $present; runtimes in this app: " +
                    "${RUNTIMES.keys}); run `edgeprune integrate android` for this app"
            )
        }
    }
}
