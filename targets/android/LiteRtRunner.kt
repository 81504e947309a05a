// LiteRtRunner.kt: runs a .tflite with LiteRT's CompiledModel (com.google.ai.edge.litert:litert), straight from
// the (uncompressed) asset. Copied into the app by `edgeprune integrate android` when the app gets LiteRT files.
package dev.edgeprune

import android.content.Context
import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel

internal class LiteRtRunner(context: Context, private val file: ModelFile) : Runner {
    private val model = CompiledModel.create(context.assets, file.asset, CompiledModel.Options(Accelerator.CPU))

    // The flatbuffer's own output order need not be the model's (the manifest's), so every tensor is bound by its
    // signature name, which CompiledModel looks tensors up by; a name it does not know fails here, at open.
    private val inputName = signatureName(file.input.name, "")
    private val outputNames = file.outputs.map { signatureName(it.name, OUTPUT_SUFFIX) }
    private val inputBuffer = model.createInputBuffer(inputName)
    private val outputBuffers = outputNames.map { model.createOutputBuffer(it) }

    override fun runAll(input: FloatArray): List<FloatArray> {
        // Static int8 models take and give int8 tensors: quantise with the manifest's scale and zero point.
        if (file.input.quantized) inputBuffer.writeInt8(file.input.quantize(input)) else inputBuffer.writeFloat(input)
        model.run(mapOf(inputName to inputBuffer), outputNames.zip(outputBuffers).toMap())
        return file.outputs.mapIndexed { i, spec ->
            if (spec.quantized) spec.dequantize(outputBuffers[i].readInt8()) else outputBuffers[i].readFloat()
        }
    }

    override fun close() {
        inputBuffer.close()
        outputBuffers.forEach { it.close() }
        model.close()
    }

    companion object {
        const val SIGNATURE_PREFIX = "serving_default_"
        const val OUTPUT_SUFFIX = "_output"

        /**
         * The signature's name for a tensor the manifest names by its tensor name: the converter names a signature's
         * tensors serving_default_<input> and serving_default_<output>_output. Other names are kept as they are
         * (CompiledModel names a tensor the signature does not alias by its tensor name).
         */
        fun signatureName(tensor: String, suffix: String): String =
            if (tensor.startsWith(SIGNATURE_PREFIX) && tensor.endsWith(suffix) &&
                tensor.length > SIGNATURE_PREFIX.length + suffix.length
            ) {
                tensor.substring(SIGNATURE_PREFIX.length, tensor.length - suffix.length)
            } else {
                tensor
            }
    }
}
