// ExecuTorchRunner.kt: runs a .pte with ExecuTorch (org.pytorch:executorch-android). Copied into the app by
// `edgeprune integrate android` when the app gets ExecuTorch files; rewritten on every run.
package dev.edgeprune

import android.content.Context
import java.io.File
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

internal class ExecuTorchRunner(context: Context, private val file: ModelFile) : Runner {
    private val module: Module

    init {
        require(file.input.dtype == "float32") { "ExecuTorchRunner feeds float32 inputs; ${file.asset} takes ${file.input.dtype}" }
        // Module.load takes a file path, not an asset: copy it once into the app's files, named by its sha256 so
        // that an app update with a new model copies the new file.
        val cached = File(context.filesDir, "edgeprune/${file.sha256}.pte")
        if (!cached.exists()) {
            cached.parentFile!!.mkdirs()
            val partial = File(cached.path + ".partial")
            context.assets.open(file.asset).use { src -> partial.outputStream().use { src.copyTo(it) } }
            check(partial.renameTo(cached)) { "cannot store $cached" }
        }
        module = Module.load(cached.absolutePath, Module.LOAD_MODE_MMAP, file.threads)
    }

    override fun runAll(input: FloatArray): List<FloatArray> {
        // forward returns the outputs in the model's flattening order, which is the manifest's order
        val values = module.forward(EValue.from(Tensor.fromBlob(input, file.input.shape)))
        check(values.size == file.outputs.size) {
            "${file.asset} returned ${values.size} outputs; the manifest lists ${file.outputs.size}"
        }
        return file.outputs.mapIndexed { i, spec ->
            val tensor = values[i].toTensor()
            if (spec.quantized) spec.dequantize(tensor.dataAsByteArray) else tensor.dataAsFloatArray
        }
    }

    override fun close() = module.destroy()
}
