// OrtRunner.kt: runs a .onnx / .ort with ONNX Runtime (com.microsoft.onnxruntime:onnxruntime-android). Copied
// into the app by `edgeprune integrate android` when the app gets ONNX files.
package dev.edgeprune

import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import android.content.Context
import java.nio.FloatBuffer

internal class OrtRunner(context: Context, private val file: ModelFile) : Runner {
    private val env = OrtEnvironment.getEnvironment()
    private val session: OrtSession

    init {
        require(file.input.dtype == "float32") { "OrtRunner feeds float32 inputs; ${file.asset} takes ${file.input.dtype}" }
        val bytes = context.assets.open(file.asset).use { it.readBytes() }
        session = OrtSession.SessionOptions().use { options ->
            if (file.threads > 0) options.setIntraOpNumThreads(file.threads)
            env.createSession(bytes, options)
        }
    }

    override fun runAll(input: FloatArray): List<FloatArray> =
        OnnxTensor.createTensor(env, FloatBuffer.wrap(input), file.input.shape).use { tensor ->
            session.run(mapOf(file.input.name to tensor)).use { result ->
                // each output by its graph name (the manifest's), in the manifest's order
                val byName = result.associate { it.key to it.value }
                file.outputs.map { spec ->
                    val value = byName[spec.name] as? OnnxTensor
                        ?: error("${file.asset} has no tensor output named ${spec.name} (outputs: ${byName.keys})")
                    if (spec.quantized) {
                        val q = value.byteBuffer
                        spec.dequantize(ByteArray(q.remaining()).also { q.get(it) })
                    } else {
                        val out = value.floatBuffer
                        FloatArray(out.remaining()).also { out.get(it) }
                    }
                }
            }
        }

    override fun close() = session.close()
}
