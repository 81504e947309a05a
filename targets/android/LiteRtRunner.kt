// LiteRtRunner.kt: runs a .tflite with LiteRT's CompiledModel (com.google.ai.edge.litert:litert), straight from
// the (uncompressed) asset. Copied into the app by `edgeprune integrate android` when the app gets LiteRT files.
package dev.edgeprune

import android.content.Context
import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel

internal class LiteRtRunner(context: Context, private val file: ModelFile) : Runner {
    private val model = CompiledModel.create(context.assets, file.asset, CompiledModel.Options(Accelerator.CPU))
    private val inputs = model.createInputBuffers()
    private val outputs = model.createOutputBuffers()

    override fun run(input: FloatArray): FloatArray {
        // Static int8 models take and give int8 tensors: quantise with the manifest's scale and zero point.
        if (file.input.quantized) inputs[0].writeInt8(file.input.quantize(input)) else inputs[0].writeFloat(input)
        model.run(inputs, outputs)
        return if (file.output.quantized) file.output.dequantize(outputs[0].readInt8()) else outputs[0].readFloat()
    }

    override fun close() {
        inputs.forEach { it.close() }
        outputs.forEach { it.close() }
        model.close()
    }
}
