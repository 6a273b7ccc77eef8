namespace Mamba.Tests;
public class SmokeTests
{
    [Test]
    public void DTypeParses() => Assert.That(DTypeExtensions.Parse("bf16"), Is.EqualTo(DType.BF16));
}
